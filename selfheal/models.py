"""Pydantic types that cross module boundaries (workflow, activities, ingress, CLI).

The policy's vocabulary (``ActionRequest``, ``Decision``, ``Execution``, ``Param``) is
defined inside the trust boundary, in ``selfheal.whitelist.vocabulary``, and re-exported
here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from selfheal.whitelist.vocabulary import ActionRequest, Decision, Execution, Param

__all__ = ["ActionRequest", "Decision", "Execution", "Param"]  # plus the models below


# --- incidents -----------------------------------------------------------------------

class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Alert(Model):
    """One alert as a source reported it. Everything in it is untrusted text."""

    source: str = "generic"
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    fingerprint: str


class AlertBatch(Model):
    alerts: list[Alert] = Field(min_length=1)


class IncidentInput(Model):
    alerts: list[Alert] = Field(min_length=1)


class Evidence(Model):
    source: str  # e.g. "journal:api.service", "file:/var/log/api.log", "labels"
    lines: list[str] = []


EXCERPT = 1_000  # characters of one evidence item


class EvidenceItem(BaseModel):
    """One thing a diagnosis read and can cite: a log line, a deployment, a metric series.

    Produced by the read-only evidence sources (``activities/evidence_sources.py``,
    ``activities/aws_evidence.py``), redacted, and bounded in size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str                       # stable: the same event read twice has the same id
    source: str                   # ecs:demo/checkout, prom:error-rate, file:checkout-log ...
    query: str                    # what was asked, with the effective (capped) window and limit
    excerpt: str = Field(max_length=EXCERPT)
    timestamp: datetime | None = None
    truncated: bool = False       # on the last item: the reader stopped before reading everything

    def to_evidence(self) -> "Evidence":
        when = self.timestamp.isoformat() if self.timestamp else "-"
        return Evidence(source=self.source, lines=[f"[{self.id}] {when} {self.excerpt}" + (" [truncated]" * self.truncated)])


class Hypothesis(Model):
    id: str
    summary: str
    evidence: list[Evidence] = []
    proposal: str | None = None


class DiagnoseInput(Model):
    incident_id: str
    alerts: list[Alert]
    candidates: list[str]  # entry ids the alerts matched in the whitelist


class Diagnosis(Model):
    """What the diagnoser concluded. ``confidence`` is for people to read; no policy sees it."""

    hypotheses: list[Hypothesis] = []
    proposal: str | None = None
    params: dict[str, Param] = {}  # parameters for the proposed entry; bounds are the policy's job
    rationale: str = ""
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class UnitState(Model):
    invocation_id: str
    n_restarts: int
    active_enter_monotonic: int
    active_state: str
    sub_state: str


class WorldState(Model):
    """What an AWS target looked like when read: the facts an executor compares and reports.

    ``resource`` names what was read (``ecs:demo/checkout``); ``facts`` are plain values
    (``task_definition``, ``desired_capacity``, ``eligible`` instances …), per kind.
    """

    resource: str
    facts: dict[str, str | int | bool | None | list[str]] = {}


class RemediationInput(Model):
    incident_id: str
    idempotency_key: str
    whitelist_sha256: str
    request: ActionRequest
    # the world as read when the workflow decided to act: a unit's state, or an AWS target's
    baseline: UnitState | WorldState | None = None
    # Reserved to run without any approval: the executor checks the brake right before acting.
    autonomous: bool = False


class RemediationResult(Model):
    entry_id: str
    kind: str
    idempotency_key: str
    # executed: acted now; already_done: the world had changed to the goal since the
    # baseline (an earlier attempt, or someone else); no_op: it was already right at the
    # baseline; world_changed: it moved elsewhere since the decision, so nothing ran.
    action: Literal["executed", "already_done", "no_op", "world_changed"]
    detail: str
    before: UnitState | WorldState | None = None
    after: UnitState | WorldState | None = None


class VerifyInput(Model):
    incident_id: str
    request: ActionRequest
    timeout_seconds: float


class Check(Model):
    name: str
    ok: bool
    detail: str


class Verification(Model):
    ok: bool
    checks: list[Check] = []


class Notification(Model):
    incident_id: str
    kind: Literal["approval_requested", "reminder", "escalation", "outcome"]
    summary: str
    details: dict[str, str] = {}


class _Proof(Model):
    """How a person proves an approval or rejection is theirs (see ``selfheal.attest``).

    Without ``statement`` and ``signature`` it is a typed name: ``unverified``, recorded,
    and counted only by a tier that lists that channel.
    """

    channel: Literal["ssh", "slack", "token"] | None = None
    statement: Annotated[str, Field(max_length=8192)] = ""  # the canonical JSON that was signed
    signature: Annotated[str, Field(max_length=8192)] = ""
    confirm: Annotated[str, Field(max_length=512)] | None = None  # the target, typed again


class Approval(_Proof):
    approver: Annotated[str, Field(min_length=1, max_length=80)]
    comment: Annotated[str, Field(max_length=2000)] = ""


class Rejection(_Proof):
    approver: Annotated[str, Field(min_length=1, max_length=80)]
    reason: Annotated[str, Field(max_length=2000)] = ""


class Viewing(_Proof):
    """Someone looked at the evidence: the Slack Evidence button, or ``selfheal show --as``."""

    person: Annotated[str, Field(min_length=1, max_length=80)]


class EvidenceView(Model):
    person: str
    at: AwareDatetime
    channel: str = "unverified"
    verified: bool = False


class ApprovalEvent(Model):
    kind: Literal["approved", "rejected", "refused", "unverified"]
    approver: str
    at: AwareDatetime
    via: Literal["update", "signal"]
    note: str = ""  # the approver's comment, or why the request was refused
    channel: str = "unverified"       # ssh, slack, token, or unverified (a typed name)
    verified: bool = False            # the channel proved the person
    after_seconds: float | None = None  # since the approval was requested
    evidence_viewed: bool = False     # the person opened the evidence (verified) before this
    fast: bool = False                # approved sooner than the tier's min_review after the request
    # The ingress request a counted answer came from (attest.Statement.origin: a Slack action, a
    # token request's Idempotency-Key): a retry of that request is answered from this event.
    origin: str | None = None


class NotificationRecord(Model):
    kind: str
    at: AwareDatetime
    delivered: bool
    detail: str = ""


Outcome = Literal[
    "remediated",            # acted and verified
    "verification_failed",   # acted, the symptom did not clear: escalated to people
    "denied",                # the policy refused
    "rejected",              # a person said no
    "expired",               # nobody approved in time
    "resolved_without_action",
    "world_changed",         # the target changed between the decision and the act: nothing ran, people decide
    "shadowed",              # a shadow entry: decided, recorded what would have run, never executed
    "no_remedy",             # no whitelisted action was proposed
    "failed",                # an activity failed for good
    # drills (DrillWorkflow): a deliberately wrong proposal that can never execute
    "drill_caught",          # someone rejected it
    "drill_missed",          # it got the approvals it asked for
    "drill_unanswered",      # nobody answered before it expired
]


class DrillRecord(Model):
    """What made a drill a drill, filled in only when it ends (the request looks like any other
    while it waits). Per approver: an approval of a drill is ``missed``, a rejection ``caught``."""

    of_incident: str               # the real incident whose approval request it accompanied
    proposal: str                  # the deliberately wrong entry it proposed
    why_wrong: str                 # in plain words, what a careful reader should have noticed
    verdicts: dict[str, Literal["caught", "missed"]] = {}


class AuditRecord(Model):
    """Observed, concluded, decided, approved, done, verified: the story of one incident."""

    incident_id: str
    status: str = "observing"
    outcome: Outcome | None = None
    outcome_detail: str = ""
    whitelist_sha256: str | None = None
    whitelist_source: str | None = None
    # observed
    alerts: list[Alert] = []
    alerts_not_recorded: int = 0  # distinct alerts past the record's cap; the history has them all
    resolved: bool = False
    # concluded
    matched_entries: list[str] = []
    diagnosis: Diagnosis | None = None   # the one that counts: the rules', or the model's
    rules_diagnosis: Diagnosis | None = None  # beside the model's, when a model diagnosed
    agent: "AgentResult | None" = None       # how the model's diagnosis went (turns, reads, refusals)
    evidence_sha256: str | None = None       # the evidence configuration the diagnosis read under
    proposal_note: str = ""
    # decided
    request: ActionRequest | None = None
    observed: WorldState | None = None  # what the workflow read to fill in the request (capacity, instances)
    decision: Decision | None = None
    earlier_decisions: list[Decision] = []  # superseded when the tier rose before acting
    # The whitelist the reservation right before acting decided under: the worker's current
    # one, which differs from whitelist_sha256 when it was reloaded while this incident ran.
    reserved_under_sha256: str | None = None
    # approved
    approvals: list[ApprovalEvent] = []
    refusals_not_recorded: int = 0  # refusals past the record's cap; the history has them all
    evidence_views: list[EvidenceView] = []  # who looked at the evidence, when, through which channel
    # done
    remediation: RemediationResult | None = None
    # verified
    verification: Verification | None = None
    notifications: list[NotificationRecord] = []
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    # set when a drill ends (a DrillWorkflow's record); None for every real incident
    drill: DrillRecord | None = None


# --- the diagnosis agent's conversation (provider-neutral; activities/llm.py maps it to
# --- the OpenAI and Anthropic wire formats) ------------------------------------------

class ToolCall(Model):
    """A tool the model asked for. ``arguments`` is the parsed JSON object; a call whose
    arguments were not a JSON object keeps them as text in ``raw`` and an empty dict."""

    id: Annotated[str, Field(max_length=256)]
    name: Annotated[str, Field(max_length=256)]
    arguments: dict[str, Any] = {}
    raw: Annotated[str, Field(max_length=16_384)] = ""


class ChatMessage(Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = []      # assistant turns
    tool_call_id: str | None = None      # tool results answer this call


class ToolSpec(Model):
    name: str
    description: str
    parameters: dict[str, Any]           # a JSON schema object


class ModelTurnInput(Model):
    messages: list[ChatMessage]
    tools: list[ToolSpec] = []
    max_tokens: int = Field(default=2048, ge=1, le=32_768)


class ModelTurn(Model):
    content: str = ""
    tool_calls: list[ToolCall] = []
    stop_reason: str = ""                # as the provider said it (stop, tool_calls, end_turn, tool_use, length...)
    usage: dict[str, int] = {}


class EvidenceRead(Model):
    """One read of a configured evidence source (``read_evidence``), by its reference."""

    ref: Annotated[str, Field(max_length=80)]        # file:ID, journal:ID, prom:ID, aws
    entry_id: str | None = None                      # the candidate entry (for aws)
    alerts: list[Alert]
    since: AwareDatetime
    until: AwareDatetime


class Candidate(Model):
    """A whitelist entry the alerts matched, as the model sees it: no target, no host."""

    id: str
    kind: str
    description: str = ""
    params: dict[str, str] = {}   # parameter name -> its type, as the entry's kind defines it


class SourceInfo(Model):
    """An evidence source the model may read, by id only (never a path, URL or query)."""

    ref: str
    kind: str
    description: str = ""


class EvidenceCatalog(Model):
    """The reviewed evidence configuration as an incident records it: its hash, and which
    sources (by id and description only) each entry or signature may read."""

    sha256: str
    source: str = ""
    sources: list[SourceInfo] = []
    allow: dict[str, list[str]] = {}

    def allowed(self, ids) -> list[SourceInfo]:
        refs = {ref for i in ids for ref in self.allow.get(i, [])}
        return [s for s in self.sources if s.ref in refs]


class AgentBounds(Model):
    max_steps: int = Field(default=8, ge=1, le=32)             # model turns
    max_read_bytes: int = Field(default=16_384, ge=256, le=65_536)  # per evidence read, as sent to the model
    max_transcript_bytes: int = Field(default=262_144, ge=4_096, le=1_048_576)
    time_budget_seconds: float = Field(default=300, gt=0, le=3600)
    max_invalid_answers: int = Field(default=2, ge=0, le=8)    # malformed or out-of-candidate answers retried
    # One model turn, from request to the whole answer: the worker derives it from the
    # model's token limit (a 2,048-token answer takes minutes on a CPU), see LlmConfig.
    turn_timeout_seconds: float = Field(default=120, gt=0, le=3600)


class AgentInput(Model):
    incident_id: str
    alerts: list[Alert]
    candidates: list[Candidate]
    sources: list[SourceInfo]
    rules: Diagnosis                  # the rules diagnoser's result, shown to the model and kept beside its own
    aws_entry: str | None = None      # the candidate whose AWS evidence the "aws" source reads
    since: AwareDatetime
    bounds: AgentBounds = AgentBounds()


class AgentResult(Model):
    diagnosis: Diagnosis | None = None   # None: no valid answer within the bounds; people decide
    note: str = ""                       # why it ended
    steps: int = 0
    reads: list[str] = []                # evidence source refs read, in order
    refused: list[str] = []              # answers and tool calls refused, and why
    transcript_bytes: int = 0
    failed: bool = False                 # the model could not be used (errors, timeouts): ``note`` says why


AuditRecord.model_rebuild()
