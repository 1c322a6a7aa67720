"""An incident's inputs and what its activities read, decide on, do and check.

Alerts arrive (``IncidentInput``, the ``alerts`` signal's ``AlertBatch``); the diagnosis
reads evidence and proposes (``DiagnoseInput`` -> ``Diagnosis``); the AWS readers report
the target's state (``WorldState``); executors act (``RemediationInput`` ->
``RemediationResult``), verifiers check (``VerifyInput`` -> ``Verification``), and
people are told (``Notification``). The policy's vocabulary (``ActionRequest``,
``Decision``, ``Execution``, ``Param``) is the trust boundary's, re-exported here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from selfheal.contract.base import Model
from selfheal.whitelist.vocabulary import ActionRequest, Decision, Execution, Param  # noqa: F401 (re-exported)

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


class PageEvent(Model):
    """What an on-call pager (PagerDuty) is told with a notification. One pager alert per
    incident (its id is the deduplication key): opened when people are needed, acknowledged
    when a verified answer arrives, resolved when the incident ends well. The workflow
    decides it (``workflows/paging.py``); the notifier only sends it."""

    action: Literal["trigger", "acknowledge", "resolve"]
    # Names of the worker's environment variables holding the routing keys, never the keys;
    # "" is the worker's own SELFHEAL_PAGERDUTY_ROUTING_KEY.
    routing_keys: list[str]
    severity: Literal["critical", "error", "warning", "info"] = "error"


class Notification(Model):
    incident_id: str
    kind: Literal["approval_requested", "reminder", "escalation", "outcome", "answered"]
    summary: str
    details: dict[str, str] = {}
    page: PageEvent | None = None  # None: no pager hears of this one
