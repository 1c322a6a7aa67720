"""Every activity a workflow runs: its name, what it takes and what it gives back.

Workflows call these declarations (``workflow.execute_activity(read_world, request, ...)``),
so the name and the result type come from here and a workflow never imports an
implementation: its sandbox never loads boto3, httpx or asyncssh. ``selfheal.activities``
implements each one under the declared name (``implements``); ``tests/test_contract.py``
checks that every declaration has exactly one implementation, with the declared types.

Reads are freely retried; the executors are idempotent (a retried or replayed one has the
effect of one) and run only after the entry's governor granted a reservation.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Callable, TypeVar

from temporalio import activity

from selfheal.contract.agent import AwsEvidenceRequest, EvidenceRead, ModelTurn, ModelTurnInput
from selfheal.contract.governor import Assessed, AssessInput, Outcome, Reserved, ReserveInput
from selfheal.contract.incident import (
    ActionRequest, DiagnoseInput, Diagnosis, EvidenceItem, Notification, RemediationInput, RemediationResult, UnitState,
    Verification, VerifyInput, WorldState,
)
from selfheal.contract.snapshot import LoadPolicy, PolicySnapshot

F = TypeVar("F", bound=Callable)


def implements(declared: Callable) -> Callable[[F], F]:
    """Register the decorated function or method as the implementation of ``declared``."""
    return activity.defn(name=declared.__name__)


def _declared(fn: F) -> F:
    return activity.defn(name=fn.__name__)(fn)


# --- what an incident runs under, and the diagnosis -------------------------------------

@_declared
async def load_policy(inp: LoadPolicy) -> PolicySnapshot:
    """The worker's whitelist (the entries the alerts match), settings and evidence catalog."""
    raise NotImplementedError


@_declared
async def diagnose(inp: DiagnoseInput) -> Diagnosis:
    """The rules' diagnosis, with the evidence they read."""
    raise NotImplementedError


@_declared
async def model_turn(inp: ModelTurnInput) -> ModelTurn:
    """One turn of the model (OpenAI or Anthropic wire format)."""
    raise NotImplementedError


@_declared
async def read_evidence(request: EvidenceRead) -> list[EvidenceItem]:
    """A source the model asked for, if the evidence configuration lets it read it."""
    raise NotImplementedError


@_declared
async def read_aws_evidence(request: AwsEvidenceRequest) -> list[EvidenceItem]:
    """ECS events and deployments, Auto Scaling activities, alarm history, logs."""
    raise NotImplementedError


# --- the governor --------------------------------------------------------------------

@_declared
async def assess_action(inp: AssessInput) -> Assessed:
    """Decide under the incident's snapshot; an automatic decision is reserved at once."""
    raise NotImplementedError


@_declared
async def reserve_action(inp: ReserveInput) -> Reserved:
    """Decide again under the current whitelist, right before acting, and reserve."""
    raise NotImplementedError


@_declared
async def record_outcome(outcome: Outcome) -> str:
    """A failed action feeds the entry's failure memory and breaker."""
    raise NotImplementedError


# --- the target: read it, act on it, check it ------------------------------------------

@_declared
async def read_unit_state(request: ActionRequest) -> UnitState:
    """A systemd unit's state on its host."""
    raise NotImplementedError


@_declared
async def read_world(request: ActionRequest) -> WorldState:
    """An AWS target's state: what deciding and acting need (capacity, instances, revision)."""
    raise NotImplementedError


@_declared
async def restart_unit(inp: RemediationInput) -> RemediationResult:
    """systemd.restart"""
    raise NotImplementedError


@_declared
async def rollback_ecs_service(inp: RemediationInput) -> RemediationResult:
    """ecs.rollback"""
    raise NotImplementedError


@_declared
async def scale_asg(inp: RemediationInput) -> RemediationResult:
    """asg.scale"""
    raise NotImplementedError


@_declared
async def reboot_instances(inp: RemediationInput) -> RemediationResult:
    """ec2.reboot"""
    raise NotImplementedError


@_declared
async def rollback_lambda_alias(inp: RemediationInput) -> RemediationResult:
    """lambda.rollback"""
    raise NotImplementedError


@_declared
async def verify_remediation(inp: VerifyInput) -> Verification:
    """Whether the symptom cleared within the entry's verify window."""
    raise NotImplementedError


# Notifiers: one activity each, so that one channel's failure or retries never re-send or
# hold up another's. Each answers what it delivered; a refusal a retry cannot fix (a 400)
# fails non-retryably and is recorded. Adding one: docs/development/notifiers.md.
@_declared
async def notify_webhook(note: Notification) -> str:
    """POST the notification as JSON to SELFHEAL_NOTIFY_URL."""
    raise NotImplementedError


@_declared
async def notify_slack(note: Notification) -> str:
    """Post an approval request with buttons; update it with the outcome (``slack:CHANNEL:TS``)."""
    raise NotImplementedError


@_declared
async def notify_pagerduty(note: Notification) -> str:
    """Send ``note.page`` to PagerDuty's Events API v2, deduplicated by the incident id."""
    raise NotImplementedError


# Which notifier hears which notifications: a pager only what carries a page event.
# Read-only: workflow code imports them, and a module-level dict could carry state between runs.
NOTIFIERS: Mapping[str, Callable] = MappingProxyType(
    {"webhook": notify_webhook, "slack": notify_slack, "pagerduty": notify_pagerduty})
HEARS: Mapping[str, frozenset[str]] = MappingProxyType({
    "webhook": frozenset({"approval_requested", "reminder", "escalation", "outcome"}),
    "slack": frozenset({"approval_requested", "outcome"}),
    "pagerduty": frozenset({"approval_requested", "escalation", "answered", "outcome"}),
})

DECLARED = (load_policy, diagnose, model_turn, read_evidence, read_aws_evidence, assess_action, reserve_action,
            record_outcome, read_unit_state, read_world, restart_unit, rollback_ecs_service, scale_asg, reboot_instances,
            rollback_lambda_alias, verify_remediation, notify_webhook, notify_slack, notify_pagerduty)
