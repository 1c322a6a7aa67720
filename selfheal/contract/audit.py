"""The record of one incident (``AuditRecord``) and the approvals people send it.

An approval, a rejection or an evidence view is a typed name or a signed statement
(``selfheal.identity.attest``); the workflow judges it (``workflows/approvals.py``) and records
what it amounted to (``ApprovalEvent``) whether or not it counted.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from selfheal.contract.agent import AgentResult
from selfheal.contract.base import Model, PersonField, ProseField, SignedField
from selfheal.contract.incident import Alert, Diagnosis, RemediationResult, Verification, WorldState
from selfheal.whitelist.vocabulary import ActionRequest, Decision


# The name an ingress gives a Slack user the whitelist maps to nobody ("slack:TEAM:USER").
# No person can be called that (a person's name has no ':'), so it can never count.
UNMAPPED_SLACK = "slack:"


class _Proof(Model):
    """How a person proves an approval or rejection is theirs (see ``selfheal.identity.attest``).

    Without ``statement`` and ``signature`` it is a typed name: ``unverified``, recorded,
    and counted only by a tier that lists that channel.
    """

    channel: Literal["ssh", "slack", "token"] | None = None
    statement: SignedField = ""  # the canonical JSON that was signed
    signature: SignedField = ""
    confirm: Annotated[str, Field(max_length=512)] | None = None  # the target, typed again


class Approval(_Proof):
    approver: PersonField
    comment: ProseField = ""


class Rejection(_Proof):
    approver: PersonField
    reason: ProseField = ""


class Viewing(_Proof):
    """Someone looked at the evidence: the Slack Evidence button, or ``selfheal show --as``."""

    person: PersonField


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
    channel: str = "webhook"  # which notifier (selfheal.contract.activities.NOTIFIERS)


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
    agent: AgentResult | None = None       # how the model's diagnosis went (turns, reads, refusals)
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
