"""The governors' messages: what incidents, workers and people send them, and what they keep.

Two workflows bound autonomy across incidents (``workflows/governor.py``,
``workflows/entry_governor.py``); everything that reaches them, or that they answer or
carry into their next run, is defined here, with their ids and the names of their
messages, so that an activity, the CLI or a test talks to a governor without importing
it. The deployment's governor (``GovernorWorkflow``, ``governor_id``) holds the current
whitelist, pauses and breakers; each entry's (``EntryGovernorWorkflow``,
``entry_governor_id``) decides and counts. Past 300 lines on purpose: the messages are
one contract, read (and changed) together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SerializerFunctionWrapHandler, model_serializer

from selfheal.contract.base import PersonField, ProseField, SignedField
from selfheal.whitelist import ActionRequest, Decision, Execution, Policy, Whitelist
from selfheal.whitelist.vocabulary import Act, Hold

GOVERNOR_WORKFLOW = "GovernorWorkflow"
ENTRY_GOVERNOR_WORKFLOW = "EntryGovernorWorkflow"


class Governor:
    """The deployment governor's messages, by name."""

    ANNOUNCE = "announce"            # update Announce -> str: a worker's whitelist; adopted unless older
    PAUSE = "pause"                  # update Pause -> str          (people, proven; checked against
    RESUME = "resume"                # update Resume -> str          the current whitelist)
    CLOSE_BREAKER = "close_breaker"  # update CloseBreaker -> str
    OPEN_BREAKER = "open_breaker"    # update OpenBreaker -> str: an entry governor counted enough failures
    BRAKE = "brake"                  # query entry_id -> Brake: what takes autonomy away from the entry now
    CURRENT = "current"              # query entry_id -> Current
    BRAKES = "brakes"                # memo: the current hash, revision and pause of every entry (Brakes.memo)
    STATUS = "status"                # query -> GovernorStatus


class EntryGovernor:
    """An entry governor's messages, by name."""

    LEARN = "learn"                    # update Learn -> str: what deciding needs of a whitelist, by its hash
    ASSESS = "assess"                  # update Assess -> Assessed: decide (and reserve, if automatic)
    RESERVE = "reserve"                # update Reserve -> Reserved: decide again right before acting
    RECORD_OUTCOME = "record_outcome"  # update Outcome -> str: failure memory; BREAKER when it trips
    LEDGER = "ledger"                  # query -> EntryStatus


# Temporal refuses more than 2,000 updates per run (and 10 in flight): a governor starts
# afresh well before, carrying its state over (the state says when: tests choose a small one).
UPDATES_PER_RUN = 500
UNKNOWN_WHITELIST = "UnknownWhitelist"  # an update named a hash the governor does not hold: teach it, ask again
BRAKED = "Braked"  # the executor found autonomy paused (or the breaker open) right before acting
BREAKER = "open the breaker: "  # record_outcome's answer when the entry's failures reach its threshold
PAUSED_MEMO = "paused:"    # the deployment governor's memo: an entry's pause, under paused:<entry id>
BREAKER_MEMO = "breaker:"  # and its open breaker, under breaker:<entry id>


def governor_id(task_queue: str) -> str:
    # Per task queue: the queue names one deployment and its whitelist.
    return f"selfheal-governor:{task_queue}"


def governor_queue(task_queue: str) -> str:
    """Where the deployment's governors run: a task queue of their own, polled by every
    worker of the deployment beside the incidents' queue. A decision is a governor's
    workflow task; on the incidents' queue it waited behind every incident's own tasks
    (1,000 approved at once: reservations took 27-39 s at the median, some timed out)."""
    return f"{task_queue}-governors"


def reservation_key(incident_id: str, entry_id: str) -> str:
    return f"{incident_id}/act/{entry_id}"  # one execution per incident and entry


def entry_governor_id(task_queue: str, entry_id: str) -> str:
    return f"selfheal-governor:{task_queue}/{entry_id}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A governor's history grows with what its messages and its state carry, decision after
# decision, and a fleet makes many. So they leave their defaults out (a model puts them
# back when it is read: nothing a decision reads changes), and so do the whitelist's models
# they carry (``Slim``). An incident's history, the audit trail, keeps every field.
def _without_defaults(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True)


M = TypeVar("M", bound=BaseModel)
Slim = Annotated[M, PlainSerializer(_without_defaults, when_used="json-unless-none")]


class Message(_Model):
    """What a governor's history holds: an update's argument or answer, its state."""

    @model_serializer(mode="wrap", when_used="json")
    def _leave_defaults_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        fields = type(self).model_fields
        return {name: value for name, value in data.items()
                if fields[name].is_required() or getattr(self, name) != fields[name].get_default(call_default_factory=True)}


class Announce(Message):
    whitelist: Slim[Whitelist]
    whitelist_sha256: str
    source: str = ""  # the file, for the log


class Brake(_Model):
    """What takes autonomy away from one entry right now."""

    paused: list[Hold] = []
    breaker: Hold | None = None

    def engaged(self, now: datetime) -> str | None:
        """Why an action may not run alone now, or None."""
        paused = [h for h in self.paused if h.active(now)]
        if paused:
            return f"autonomy paused by {paused[0].by}: {paused[0].reason}"
        if self.breaker is not None:
            return f"the breaker is open: {self.breaker.reason}"
        return None


class Current(_Model):
    """The current whitelist as one entry's decision needs it."""

    whitelist_sha256: str = ""       # empty: no worker has announced one yet
    revision: int = 0
    policy: Policy | None = None  # ``Whitelist.for_entry``; None when the entry is not in it
    brake: Brake = Brake()


class Brakes(_Model):
    """The deployment governor's brakes and the current whitelist's hash, as its memo holds them.

    Every automatic incident reads them two or three times (deciding, right before the
    executor, recording the outcome). A query is a task for the worker that holds the
    governor, one workflow answering a whole fleet's queries in turn (600 queries from 30 at
    a time took 2 s there and 1.4 s of the worker's CPU, 5x a describe, measured here); the
    memo is read by a describe, which the server answers from the workflow's state. The
    governor writes it in the same workflow task as the update that changed it, so a
    describe after ``selfheal pause`` returns sees the pause.

    In the memo (``memo``, ``from_memo``): the hash, revision and pause of every entry under
    ``brakes``, and each entry's pause and open breaker under a key of its own, so a
    person's pause or a breaker writes its own hold to the history, not every hold of a
    deployment of 500 entries.
    """

    whitelist_sha256: str = ""  # empty: no worker has announced one yet
    revision: int = 0
    pause_all: Hold | None = None
    pauses: dict[str, Hold] = {}
    breakers: dict[str, Hold] = {}

    def brake(self, entry_id: str) -> Brake:
        """The entry's brake, every hold as it stands (the decision judges which are active)."""
        holds = (self.pause_all, self.pauses.get(entry_id))
        return Brake(paused=[h for h in holds if h is not None], breaker=self.breakers.get(entry_id))

    def status(self, now: datetime) -> "GovernorStatus":
        """What the status query would say of the holds (those still in force), for a reader
        with no worker to ask: every entry that has a pause or a breaker of its own."""
        def active(hold: Hold | None) -> bool:
            return hold is not None and hold.active(now)
        entries = [EntryStatus(entry_id=entry, paused=[h for h in (self.pause_all, self.pauses.get(entry)) if active(h)],
                               breaker=self.breakers.get(entry))
                   for entry in sorted(set(self.pauses) | set(self.breakers))]
        return GovernorStatus(whitelist_sha256=self.whitelist_sha256, revision=self.revision,
                              pause_all=self.pause_all if active(self.pause_all) else None, entries=entries)

    def memo(self) -> dict[str, Any]:
        """The memo's fields, as JSON values (what a describe decodes them back to)."""
        head = {"whitelist_sha256": self.whitelist_sha256, "revision": self.revision,
                "pause_all": self.pause_all and self.pause_all.model_dump(mode="json")}
        return {Governor.BRAKES: head,
                **{PAUSED_MEMO + entry: hold.model_dump(mode="json") for entry, hold in self.pauses.items()},
                **{BREAKER_MEMO + entry: hold.model_dump(mode="json") for entry, hold in self.breakers.items()}}

    @classmethod
    def from_memo(cls, memo: Mapping[str, Any]) -> "Brakes | None":
        """The brakes a memo holds; None when it has none (the governor wrote none yet)."""
        if Governor.BRAKES not in memo:
            return None

        def under(prefix: str) -> dict[str, Any]:
            return {key[len(prefix):]: value for key, value in memo.items() if key.startswith(prefix)}
        return cls.model_validate({**memo[Governor.BRAKES], "pauses": under(PAUSED_MEMO), "breakers": under(BREAKER_MEMO)})


class OpenBreaker(Message):
    entry_id: str
    reason: str


# An entry's id as people type it: bounded as the whitelist bounds ids, not matched to their
# pattern, so an id no entry has is refused by the governor, and recorded.
EntryIdField = Annotated[str, Field(min_length=1, max_length=80)]


class Proven(Message):
    """A signed statement (``selfheal.identity.attest``) that proves ``by`` is who sent this.
    What people send is bounded as an approval is (``selfheal.contract.base``): the governor
    keeps a pause's reason in its state, its memo and every continued run."""

    channel: Literal["ssh", "slack", "token"] | None = None
    statement: SignedField = ""
    signature: SignedField = ""


class Pause(Proven):
    by: PersonField
    reason: ProseField
    entry_id: EntryIdField | None = None  # None: every entry
    until: datetime | None = None


class Resume(Proven):
    by: PersonField
    entry_id: EntryIdField | None = None


class CloseBreaker(Proven):
    by: PersonField
    entry_id: EntryIdField
    reason: ProseField


class LogEvent(Message):
    at: datetime
    by: str
    action: str  # announced, paused, resumed, breaker_opened, breaker_closed, refused
    entry_id: str | None = None
    reason: str = ""
    verified: bool = False  # the person was proven (a signed statement), not a typed name


class GovernorState(Message):
    updates_per_run: int = UPDATES_PER_RUN  # state, not a constant read at run time: tests choose a small one
    whitelist: Slim[Whitelist] | None = None
    whitelist_sha256: str = ""
    pause_all: Hold | None = None
    pauses: dict[str, Hold] = {}
    breakers: dict[str, Hold] = {}
    nonces: list[str] = []                   # signed statements already used
    log: list[LogEvent] = []


class EntryStatus(_Model):
    entry_id: str
    paused: list[Hold] = []
    breaker: Hold | None = None
    # From the entry's own governor (``EntryGovernorWorkflow.ledger``); the deployment's
    # status query leaves them empty, ``activities.governor.read_status`` fills them in.
    autonomous_targets: list[str] = []  # acted on alone within the entry's autonomy window
    window: str = ""
    executions_in_rate_window: int = 0
    recent_failures: list[Act] = []


class GovernorStatus(_Model):
    whitelist_sha256: str = ""
    revision: int = 0
    pause_all: Hold | None = None
    entries: list[EntryStatus] = []
    log: list[LogEvent] = []


class Learn(Message):
    whitelist_sha256: str
    policy: Slim[Policy] | None  # ``Whitelist.for_entry``; None: that whitelist has no such entry


class Assess(Message):
    whitelist_sha256: str
    request: Slim[ActionRequest]
    incident_id: str
    # Why the incident needs at least one person whatever the tier (a model's proposal or
    # parameters; workflows/agent_answer.py): decided here, so an action that will wait for
    # people never claims autonomy first.
    raised_by: list[str] = []
    brake: Brake = Brake()  # the deployment governor's, read just before this update
    # With an assessment: reserve an automatic decision at once, decided again under the
    # deployment's current whitelist: nothing but a read of the target stands between it and
    # the executor, which checks the brake once more. ``reserve_under`` names that whitelist
    # when it is not the incident's own (``whitelist_sha256``): a fleet makes many
    # decisions, and a governor's history holds every byte of each.
    reserve: bool = False
    reserve_under: str = ""
    idempotency_key: str = ""  # empty: the incident's own key for the entry (``reservation_key``)

    def reservation_sha256(self) -> str:
        return self.reserve_under or self.whitelist_sha256

    def key(self) -> str:
        return self.idempotency_key or reservation_key(self.incident_id, self.request.entry_id)


class Reserve(Assess):
    approved_by: list[str] = []


class AssessInput(Message):
    """An incident's ``assess_action``: decided under its own snapshot (its hash, and what
    deciding needs of it, which the governor learns once)."""

    whitelist_sha256: str
    policy: Slim[Policy]  # Whitelist.for_entry(request.entry_id) of the incident's snapshot
    request: Slim[ActionRequest]
    incident_id: str
    idempotency_key: str  # the key of the reservation an automatic decision takes at once
    raised_by: list[str] = []


class ReserveInput(AssessInput):
    """An incident's ``reserve_action``: decided again under the current whitelist."""

    approved_by: list[str] = []


class Reserved(Message):
    granted: bool
    # The decision made right before acting; when not granted, why. The governor leaves it
    # out of an assessment's reservation when it is the assessment's own decision, and
    # leaves out the whitelist it was asked under: the activity puts both back, so an
    # incident always records them.
    decision: Slim[Decision] | None = None
    execution: Slim[Execution] | None = None
    whitelist_sha256: str = ""  # the whitelist that decision was made under
    # An execution of the asking incident, on the request's entry and the decision's
    # targets (all of them, as a rule), is said by when it started and whether alone.
    started_at: datetime | None = None
    alone: bool = False

    def said_once(self, incident_id: str, entry_id: str, known: Decision | None) -> "Reserved":
        """What the governor answers: what the asker already knows left out (the decision when
        it is ``known``, the assessment's own; the execution's incident, entry and targets)."""
        update = {"decision": None} if known is not None and self.decision == known else {}
        e = self.execution
        if e is not None and (e.incident_id, e.entry_id, e.targets) == (incident_id, entry_id, self.decision.targets):
            update |= {"execution": None, "started_at": e.started_at, "alone": e.autonomous}
        return self.model_copy(update=update) if update else self

    def in_full(self, incident_id: str, entry_id: str, decision: Decision, whitelist_sha256: str) -> "Reserved":
        """What the asker records: the decision, the whitelist and the execution whole."""
        decision = self.decision or decision
        execution = self.execution if self.started_at is None else Execution(
            entry_id=entry_id, started_at=self.started_at, incident_id=incident_id, targets=decision.targets,
            autonomous=self.alone)
        return self.model_copy(update={"decision": decision, "whitelist_sha256": whitelist_sha256, "execution": execution,
                                       "started_at": None, "alone": False})


class Assessed(Message):
    decision: Slim[Decision]         # under the incident's own snapshot: what its audit records
    reserved: Reserved | None = None  # an automatic decision's reservation, under the current whitelist


class Outcome(Message):
    entry_id: str
    targets: list[str]
    incident_id: str
    outcome: str
    whitelist_sha256: str = ""  # whose breaker threshold counts (the current whitelist's)


class EntryState(Message):
    entry_id: str
    updates_per_run: int = UPDATES_PER_RUN  # state, not a constant read at run time: tests choose a small one
    policies: dict[str, Slim[Policy] | None] = {}  # whitelist hash -> Whitelist.for_entry, oldest first
    executions: list[Slim[Execution]] = []
    autonomous: list[Act] = []
    failures: list[Act] = []
    reservations: dict[str, Slim[Execution]] = {}  # idempotency key -> execution
    assessed: dict[str, Assessed] = {}       # incident id -> its assessment, for a retried one
    outcomes: dict[str, str] = {}            # "incident:outcome" -> the answer given, for a retried report
