"""Pydantic types that cross module boundaries (workflow, activities, ingress, CLI).

Decision kinds::

    Decision
    ├── auto             run now, nobody needs to approve
    ├── needs_approval   wait for ``approvals`` distinct people from ``approvers``
    └── deny             never run; ``rule`` names the rule, ``reason`` says why
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

Param = StrictInt | list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]+$", max_length=128)]]


class ActionRequest(BaseModel):
    """What the workflow asks the policy to allow: an entry, its target, and parameters.

    There is deliberately no field for confidence, rationale or any free text: the
    policy cannot be swayed by how sure a diagnosis sounds, because nothing can carry
    it there. Unknown fields are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: Annotated[str, Field(max_length=80)]
    target: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=255)]] = {}
    params: dict[Annotated[str, Field(max_length=64)], Param] = {}


class Execution(BaseModel):
    """One past execution of an entry, as counted by rate limits and cooldowns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: str
    started_at: AwareDatetime
    incident_id: str = ""


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "needs_approval", "deny"]
    entry_id: str
    tier: str | None = None
    approvals: int = 0
    approvers: list[str] = []
    rule: str | None = None
    reason: str | None = None

    @classmethod
    def auto(cls, entry_id: str, tier: str) -> "Decision":
        return cls(kind="auto", entry_id=entry_id, tier=tier)

    @classmethod
    def needs_approval(cls, entry_id: str, tier: str, approvals: int, approvers: list[str]) -> "Decision":
        return cls(kind="needs_approval", entry_id=entry_id, tier=tier, approvals=approvals, approvers=approvers)

    @classmethod
    def deny(cls, entry_id: str, rule: str, reason: str) -> "Decision":
        return cls(kind="deny", entry_id=entry_id, rule=rule, reason=reason)

    @property
    def allowed(self) -> bool:
        return self.kind != "deny"

    def __str__(self) -> str:
        if self.kind == "auto":
            return f"auto ({self.tier} tier)"
        if self.kind == "needs_approval":
            return f"needs {self.approvals} approval(s) from {', '.join(self.approvers)} ({self.tier} tier)"
        return f"deny [{self.rule}]: {self.reason}"



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


class RemediationInput(Model):
    incident_id: str
    idempotency_key: str
    whitelist_sha256: str
    request: ActionRequest
    baseline: UnitState | None = None  # the world as read when the workflow decided to act


class RemediationResult(Model):
    entry_id: str
    kind: str
    idempotency_key: str
    action: Literal["executed", "already_done"]
    detail: str
    before: UnitState | None = None
    after: UnitState | None = None


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


class Approval(Model):
    approver: Annotated[str, Field(min_length=1, max_length=80)]
    comment: str = ""


class Rejection(Model):
    approver: Annotated[str, Field(min_length=1, max_length=80)]
    reason: str = ""


class ApprovalEvent(Model):
    kind: Literal["approved", "rejected", "refused"]
    approver: str
    at: AwareDatetime
    via: Literal["update", "signal"]
    note: str = ""  # the approver's comment, or why the request was refused


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
    "no_remedy",             # no whitelisted action was proposed
    "failed",                # an activity failed for good
]


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
    diagnosis: Diagnosis | None = None
    proposal_note: str = ""
    # decided
    request: ActionRequest | None = None
    decision: Decision | None = None
    # approved
    approvals: list[ApprovalEvent] = []
    # done
    remediation: RemediationResult | None = None
    # verified
    verification: Verification | None = None
    notifications: list[NotificationRecord] = []
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
