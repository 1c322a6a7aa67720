"""GovernorWorkflow: the one place that sees every incident's actions, for one deployment.

Autonomy must be bounded across incidents, not only inside one: five hosts alerting at
once must not be restarted one by one by five incidents that each think they are alone.
So every decision and every reservation is an update on this workflow, which Temporal
runs one at a time: concurrent incidents see each other's claims. It holds, per entry,
the executions (rate limits, cooldowns), the targets claimed for autonomous action, the
failures (failure memory) and the breaker; and the pauses people set. The policy itself
(``selfheal.whitelist.decide``) stays pure: the governor hands it this state as a
``GovernorView``.

Messages:
  update ``configure(Configure)``       the worker's whitelist, so people can be checked
  update ``assess(Assess) -> Decision``  decide, and claim the targets if it is autonomous
  update ``reserve(Reserve) -> Reserved`` decide again right before acting; record the execution
  update ``record_outcome(Outcome)``      a failed action feeds failure memory and the breaker
  update ``pause(Pause)``, ``resume(Resume)``, ``close_breaker(CloseBreaker)``  people, checked
  query  ``status() -> GovernorStatus``
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal import attest
    from selfheal.whitelist import ActionRequest, Decision, Execution, Whitelist, decide
    from selfheal.whitelist.durations import format_duration
    from selfheal.whitelist.vocabulary import Act, GovernorView, Hold
    from selfheal.workflows import agent_answer

RETAIN = timedelta(days=30)  # nothing older counts against any sensible window
UPDATES_PER_RUN = 500        # Temporal refuses more than 2,000 updates per run
MAX_LOG = 200                # governor events kept in state; the history keeps them all
FAILED_OUTCOMES = frozenset({"verification_failed", "failed"})


def governor_id(task_queue: str) -> str:
    # Per task queue: the queue names one deployment and its whitelist.
    return f"selfheal-governor:{task_queue}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Configure(_Model):
    whitelist: Whitelist
    whitelist_sha256: str


class Assess(_Model):
    whitelist: Whitelist
    whitelist_sha256: str
    request: ActionRequest
    incident_id: str
    # Why the incident needs at least one person whatever the tier (a model's proposal or
    # parameters; workflows/agent_answer.py): decided here, so an action that will wait for
    # people never claims autonomy first.
    raised_by: list[str] = []


class Reserve(Assess):
    idempotency_key: str
    approved_by: list[str] = []


class Reserved(_Model):
    granted: bool
    decision: Decision  # the decision made right before acting; when not granted, why
    execution: Execution | None = None
    whitelist_sha256: str | None = None  # the whitelist that decision was made under (None: older governors)


class Outcome(_Model):
    entry_id: str
    targets: list[str]
    incident_id: str
    outcome: str


class _Proven(_Model):
    """A signed statement (``selfheal.attest``) that proves ``by`` is who sent this."""

    channel: Literal["ssh", "slack", "token"] | None = None
    statement: str = ""
    signature: str = ""


class Pause(_Proven):
    by: str
    reason: str
    entry_id: str | None = None  # None: every entry
    until: datetime | None = None


class Resume(_Proven):
    by: str
    entry_id: str | None = None


class CloseBreaker(_Proven):
    by: str
    entry_id: str
    reason: str


class EntryLedger(_Model):
    executions: list[Execution] = []
    autonomous: list[Act] = []
    failures: list[Act] = []
    breaker: Hold | None = None


class LogEvent(_Model):
    at: datetime
    by: str
    action: str  # paused, resumed, breaker_opened, breaker_closed, refused
    entry_id: str | None = None
    reason: str = ""
    verified: bool = False  # the person was proven (a signed statement), not a typed name


class GovernorState(_Model):
    whitelist: Whitelist | None = None
    whitelist_sha256: str = ""
    entries: dict[str, EntryLedger] = {}
    pause_all: Hold | None = None
    pauses: dict[str, Hold] = {}
    reservations: dict[str, Execution] = {}  # idempotency key -> execution
    assessed: dict[str, Decision] = {}       # incident id -> its decision, for a retried assessment
    outcomes: list[str] = []                 # incident ids whose outcome is recorded
    nonces: list[str] = []                   # signed statements already used
    log: list[LogEvent] = []


class EntryStatus(_Model):
    entry_id: str
    paused: list[Hold] = []
    breaker: Hold | None = None
    autonomous_targets: list[str] = []  # acted on alone within the entry's autonomy window
    window: str = ""
    executions_in_rate_window: int = 0
    recent_failures: list[Act] = []


class GovernorStatus(_Model):
    whitelist_sha256: str = ""
    pause_all: Hold | None = None
    entries: list[EntryStatus] = []
    log: list[LogEvent] = []


@workflow.defn
class GovernorWorkflow:
    @workflow.init
    def __init__(self, state: GovernorState) -> None:
        self._state = state
        self._updates = 0

    @workflow.run
    async def run(self, state: GovernorState) -> None:
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() or self._updates >= UPDATES_PER_RUN
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._pruned())

    # --- incidents ---------------------------------------------------------------------

    @workflow.update
    def configure(self, cfg: Configure) -> str:
        self._updates += 1
        self._learn(cfg.whitelist, cfg.whitelist_sha256)
        return cfg.whitelist_sha256

    @workflow.update
    def assess(self, inp: Assess) -> Decision:
        self._updates += 1
        self._learn(inp.whitelist, inp.whitelist_sha256)
        earlier = self._state.assessed.get(inp.incident_id)
        if earlier is not None:
            return earlier  # a retried assessment is the same decision
        decision = self._decide(inp)
        if decision.kind == "auto":
            # Claimed now, before acting: a concurrent incident's assessment counts it.
            self._ledger(inp.request.entry_id).autonomous.append(
                Act(targets=decision.targets, at=workflow.now(), incident_id=inp.incident_id))
        self._state.assessed[inp.incident_id] = decision
        return decision

    @workflow.update
    def reserve(self, inp: Reserve) -> Reserved:
        self._updates += 1
        self._learn(inp.whitelist, inp.whitelist_sha256)
        earlier = self._state.reservations.get(inp.idempotency_key)
        decision = self._decide(inp)
        if earlier is not None:
            return Reserved(granted=True, decision=decision, execution=earlier,  # the same execution, not a second
                            whitelist_sha256=inp.whitelist_sha256)
        approved = set(inp.approved_by) & set(decision.approvers)
        if decision.kind == "deny" or len(approved) < decision.approvals:
            # Denied, or the tier rose and people decide again: this incident no longer
            # acts alone, so its claim stops counting against other targets.
            ledger = self._ledger(inp.request.entry_id)
            ledger.autonomous = [a for a in ledger.autonomous if a.incident_id != inp.incident_id]
            return Reserved(granted=False, decision=decision, whitelist_sha256=inp.whitelist_sha256)
        now = workflow.now()
        execution = Execution(entry_id=inp.request.entry_id, started_at=now, incident_id=inp.incident_id,
                              targets=decision.targets, autonomous=not approved)
        ledger = self._ledger(inp.request.entry_id)
        ledger.executions.append(execution)
        if execution.autonomous and not any(a.incident_id == inp.incident_id for a in ledger.autonomous):
            ledger.autonomous.append(Act(targets=decision.targets, at=now, incident_id=inp.incident_id))
        self._state.reservations[inp.idempotency_key] = execution
        return Reserved(granted=True, decision=decision, execution=execution, whitelist_sha256=inp.whitelist_sha256)

    @workflow.update
    def record_outcome(self, outcome: Outcome) -> str:
        self._updates += 1
        key = f"{outcome.incident_id}:{outcome.outcome}"
        if outcome.outcome not in FAILED_OUTCOMES or key in self._state.outcomes:
            return "nothing to remember"
        self._state.outcomes.append(key)
        now = workflow.now()
        ledger = self._ledger(outcome.entry_id)
        ledger.failures.append(Act(targets=outcome.targets, at=now, incident_id=outcome.incident_id, note=outcome.outcome))
        entry = self._state.whitelist.entry(outcome.entry_id) if self._state.whitelist else None
        if entry is None or ledger.breaker is not None:
            return "remembered"
        window = entry.breaker.window
        failures = [f for f in ledger.failures if f.note == "verification_failed" and f.at > now - window]
        if len(failures) >= entry.breaker.failures:
            reason = (f"{len(failures)} verification failures within {format_duration(window)} "
                      f"(incidents {', '.join(f.incident_id for f in failures)})")
            ledger.breaker = Hold(by="selfheal", at=now, reason=reason)
            self._log("selfheal", "breaker_opened", outcome.entry_id, reason)
            return "breaker opened"
        return "remembered"

    # --- people ------------------------------------------------------------------------
    # As with approvals, the rules run in the handlers (not validators), so that every
    # refusal is recorded: Temporal keeps no trace of an update its validator rejected.

    @workflow.update
    def pause(self, cmd: Pause) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "pause")
        if cmd.by not in wl.named_people():
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: {cmd.by!r} is not named in the whitelist")
        if cmd.entry_id is not None and wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: no entry {cmd.entry_id!r}")
        # Pausing only takes autonomy away: a typed name may do it, and is recorded as such.
        unproven = self._proven(cmd, "pause", wl) if cmd.signature else None
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: {unproven}")
        verified = bool(cmd.signature)
        hold = Hold(by=cmd.by, at=workflow.now(), reason=cmd.reason, until=cmd.until)
        if cmd.entry_id is None:
            self._state.pause_all = hold
        else:
            self._state.pauses[cmd.entry_id] = hold
        self._log(cmd.by, "paused", cmd.entry_id, cmd.reason + (f" (until {cmd.until.isoformat()})" if cmd.until else ""),
                  verified=verified)
        return f"autonomy paused for {cmd.entry_id or 'every entry'} by {cmd.by}"

    @workflow.update
    def resume(self, cmd: Resume) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "resume")
        affected = [e.id for e in wl.entries] if cmd.entry_id is None else [cmd.entry_id]
        if cmd.entry_id is not None and wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: no entry {cmd.entry_id!r}")
        # Resuming gives autonomy back: only someone who may approve everything it affects.
        not_allowed = [e for e in affected if cmd.by not in wl.allowed_approvers(e)]
        if not_allowed:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: {cmd.by!r} may not approve {', '.join(not_allowed)}")
        unproven = self._proven(cmd, "resume", wl)
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: {unproven}")
        if cmd.entry_id is None:
            self._state.pause_all = None
        else:
            self._state.pauses.pop(cmd.entry_id, None)
        self._log(cmd.by, "resumed", cmd.entry_id, "", verified=True)
        return f"autonomy resumed for {cmd.entry_id or 'every entry'} by {cmd.by}"

    @workflow.update
    def close_breaker(self, cmd: CloseBreaker) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "close breaker")
        if wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: no entry {cmd.entry_id!r}")
        if cmd.by not in wl.allowed_approvers(cmd.entry_id):
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: {cmd.by!r} may not approve {cmd.entry_id}")
        unproven = self._proven(cmd, "close_breaker", wl)
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: {unproven}")
        ledger = self._ledger(cmd.entry_id)
        if ledger.breaker is None:
            return f"the breaker of {cmd.entry_id} is not open"
        ledger.breaker = None
        self._log(cmd.by, "breaker_closed", cmd.entry_id, cmd.reason, verified=True)
        return f"breaker of {cmd.entry_id} closed by {cmd.by}"

    # --- queries -----------------------------------------------------------------------

    @workflow.query
    def status(self) -> GovernorStatus:
        now = workflow.now()
        wl = self._state.whitelist
        entries = []
        for entry in wl.entries if wl else []:
            ledger = self._state.entries.get(entry.id, EntryLedger())
            window = entry.autonomy.window
            entries.append(EntryStatus(
                entry_id=entry.id,
                paused=[h for h in (self._state.pause_all, self._state.pauses.get(entry.id)) if h and h.active(now)],
                breaker=ledger.breaker,
                autonomous_targets=sorted({t for a in ledger.autonomous if a.at > now - window for t in a.targets}),
                window=format_duration(window),
                executions_in_rate_window=sum(e.started_at > now - entry.rate_limit.window for e in ledger.executions),
                recent_failures=[f for f in ledger.failures if f.at > now - entry.failure_memory.window],
            ))
        pause_all = self._state.pause_all if self._state.pause_all and self._state.pause_all.active(now) else None
        return GovernorStatus(whitelist_sha256=self._state.whitelist_sha256, pause_all=pause_all, entries=entries,
                              log=self._state.log[-50:])

    # --- helpers -----------------------------------------------------------------------

    def _decide(self, inp: Assess) -> Decision:
        entry_id = inp.request.entry_id
        ledger = self._state.entries.get(entry_id, EntryLedger())
        now = workflow.now()
        view = GovernorView(
            autonomous=[a for a in ledger.autonomous if a.incident_id != inp.incident_id],
            failures=[f for f in ledger.failures if f.incident_id != inp.incident_id],
            breaker=ledger.breaker,
            paused=[h for h in (self._state.pause_all, self._state.pauses.get(entry_id)) if h and h.active(now)],
        )
        executions = [e for e in ledger.executions if e.incident_id != inp.incident_id]
        return agent_answer.raised(decide(inp.whitelist, inp.request, executions, now, view), inp.whitelist, inp.raised_by)

    def _ledger(self, entry_id: str) -> EntryLedger:
        return self._state.entries.setdefault(entry_id, EntryLedger())

    def _learn(self, whitelist: Whitelist, sha256: str) -> None:
        if sha256 != self._state.whitelist_sha256:
            self._state.whitelist, self._state.whitelist_sha256 = whitelist, sha256

    def _whitelist_or_refuse(self, by: str, what: str) -> Whitelist:
        if self._state.whitelist is None:
            self._refuse(by, None, f"{what} refused: no worker has told the governor its whitelist yet")
        return self._state.whitelist

    def _proven(self, cmd: _Proven, action: str, wl: Whitelist) -> str | None:
        """Why ``cmd`` does not prove its sender (None if it does). Giving authority back
        (resume, closing a breaker) is an approval too: a typed name proves nothing."""
        if not cmd.signature:
            return "unverified: a typed name proves nothing; sign it (the selfheal CLI signs with your SSH key)"
        try:
            statement = attest.check(cmd.statement, cmd.signature, keys=wl.identity(cmd.by).ssh_keys,
                                     attestation_keys=wl.attestation_keys)
        except attest.Unproven as exc:
            return f"signature refused: {exc}"
        expected = {"action": action, "subject": workflow.info().workflow_id, "entry": cmd.entry_id,
                    "person": cmd.by, "channel": cmd.channel}
        for field, want in expected.items():
            if getattr(statement, field) != want:
                return f"signature refused: signed for {field} {getattr(statement, field)!r}, not {want!r}"
        if statement.expires <= workflow.now():
            return f"signature refused: expired at {statement.expires.isoformat()}"
        if statement.nonce in self._state.nonces:
            return "signature refused: replayed: this signed statement was already used"
        self._state.nonces.append(statement.nonce)
        del self._state.nonces[:-1000]
        return None

    def _refuse(self, by: str, entry_id: str | None, reason: str):
        self._log(by, "refused", entry_id, reason)
        raise ApplicationError(reason, type="GovernorRefused", non_retryable=True)

    def _log(self, by: str, action: str, entry_id: str | None, reason: str, verified: bool = False) -> None:
        self._state.log.append(LogEvent(at=workflow.now(), by=by[:80], action=action, entry_id=entry_id, reason=reason[:500],
                                        verified=verified))
        del self._state.log[:-MAX_LOG]

    def _pruned(self) -> GovernorState:
        cutoff = workflow.now() - RETAIN
        state = self._state.model_copy(deep=True)
        for ledger in state.entries.values():
            ledger.executions = [e for e in ledger.executions if e.started_at > cutoff]
            ledger.autonomous = [a for a in ledger.autonomous if a.at > cutoff]
            ledger.failures = [f for f in ledger.failures if f.at > cutoff]
        state.reservations = {k: v for k, v in state.reservations.items() if v.started_at > cutoff}
        live = {a.incident_id for ledger in state.entries.values() for a in ledger.autonomous}
        live |= {e.incident_id for e in state.reservations.values()}
        state.assessed = {k: v for k, v in state.assessed.items() if k in live}
        state.outcomes = state.outcomes[-10_000:]
        return state

