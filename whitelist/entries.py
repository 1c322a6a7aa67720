"""What one whitelist entry may say: who approves it, its limits, autonomy, failure memory
and breaker, how it is verified, and its kind's target and bounds (one model per kind, a
union discriminated by ``kind``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from .durations import NonNegativeDuration, PositiveDuration
from .matchers import parse_matcher

from .fields import Account, EntryId, EntryPaging, Name, Person, Region, Strict

class Approvers(Strict):
    people: list[Person] = []
    groups: list[Name] = []


class RateLimit(Strict):
    max_executions: int = Field(ge=1, le=1000)
    window: PositiveDuration


class HttpCheck(Strict):
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    expect_status: int = Field(default=200, ge=100, le=599)


class Verify(Strict):
    """How to tell the action worked; the kind's own check (unit running, service stable) always runs."""

    timeout: PositiveDuration
    http: HttpCheck | None = None
    alert_resolves: bool = False


def _canonical_matcher(text: str) -> str:
    return str(parse_matcher(text))


class Autonomy(Strict):
    """How far an entry may act by itself across incidents.

    When an entry's autonomous actions would reach more than ``max_targets`` distinct
    targets within ``window``, the symptom is fleet-wide and so is the blast radius: the
    request needs the ``escalate_to`` tier's approvals (default: the whitelist's highest).
    """

    max_targets: int = Field(default=1, ge=0, le=1000)
    window: PositiveDuration = timedelta(minutes=10)
    escalate_to: Name | None = None


class FailureMemory(Strict):
    """An action on a target that failed (verification, or after acting) within ``window``
    makes the next request for that entry and target need at least one approver."""

    window: PositiveDuration = timedelta(days=7)


class Breaker(Strict):
    """``failures`` verification failures of an entry within ``window`` open its breaker;
    while open, every request for the entry needs approval, until a person closes it."""

    failures: int = Field(default=3, ge=1, le=100)
    window: PositiveDuration = timedelta(hours=1)


class _EntryBase(Strict):
    id: EntryId
    description: str = ""
    blast_radius: Name
    approvers: Approvers = Approvers()
    rate_limit: RateLimit
    cooldown: NonNegativeDuration
    match: list[Annotated[str, AfterValidator(_canonical_matcher)]] = Field(min_length=1)
    verify: Verify
    autonomy: Autonomy = Autonomy()
    failure_memory: FailureMemory = FailureMemory()
    breaker: Breaker = Breaker()
    # shadow: diagnosed and decided as usual, never executed; the incident ends "shadowed"
    # with what would have run and whose approval it would have needed.
    mode: Literal["active", "shadow"] = "active"
    # Pages another PagerDuty service than its tier's (its routing key's variable only).
    paging: EntryPaging | None = None

    @field_validator("match")
    @classmethod
    def _matchers_select_something(cls, value: list[str]) -> list[str]:
        # An entry that only says what an alert is *not* would match nearly every alert.
        if not any(parse_matcher(m).positive for m in value):
            raise ValueError('needs at least one positive matcher (name="value" or name=~"regex")')
        return value


# --- systemd.restart --------------------------------------------------------------

class SystemdTarget(Strict):
    # Starts with a letter or digit: a unit named "-x.service" would read as an option to
    # systemctl, in sudoers and SSM documents too.
    unit: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9:_.@\-]*\.(service|socket|timer)$")]
    host: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-*?\[\]]+$")] = Field(
        description="a host name or a glob (web-*) that the alert's host must match"
    )
    scope: Literal["system", "user"] = "system"


class SystemdRestartEntry(_EntryBase):
    kind: Literal["systemd.restart"]
    target: SystemdTarget


# --- AWS targets --------------------------------------------------------------------



class AwsPlace(Strict):
    """Where an AWS target lives. Required (``aws_problems``, run by the model's own
    validation so that the message names the rule), so an entry can never act in another
    account or region than the one reviewed, and the generated IAM policy's ARNs are exact."""

    region: Region | None = None
    account: Account | None = None


# --- ecs.rollback -----------------------------------------------------------------

class EcsTarget(AwsPlace):
    cluster: Name
    service: Name
    task_definition: Annotated[str, Field(pattern=r"^([A-Za-z0-9_\-]+:\d+|arn:aws[a-z\-]*:ecs:[^\s]+:task-definition/[A-Za-z0-9_\-]+:\d+)$")] = Field(
        description="the pinned known-good revision, family:revision or its ARN"
    )


class EcsRollbackEntry(_EntryBase):
    kind: Literal["ecs.rollback"]
    target: EcsTarget


# --- asg.scale --------------------------------------------------------------------

class AsgTarget(AwsPlace):
    group: Name


class AsgBounds(Strict):
    min_capacity: int = Field(ge=0)
    max_capacity: int = Field(ge=0)
    max_step: int = Field(ge=1, description="largest change of desired capacity in one action")

    @field_validator("max_capacity")
    @classmethod
    def _not_below_min(cls, value: int, info) -> int:
        low = info.data.get("min_capacity")
        if low is not None and value < low:
            raise PydanticCustomError(
                "bounds_inverted", "max_capacity {max} is below min_capacity {min}", {"max": value, "min": low}
            )
        return value


class AsgScaleEntry(_EntryBase):
    kind: Literal["asg.scale"]
    target: AsgTarget
    bounds: AsgBounds


# --- ec2.reboot -------------------------------------------------------------------

class Ec2Target(AwsPlace):
    tags: dict[Name, Name] = Field(min_length=1, description="only instances carrying all these tags")
    max_instances: int = Field(ge=1, le=100)


class Ec2RebootEntry(_EntryBase):
    kind: Literal["ec2.reboot"]
    target: Ec2Target


# --- lambda.rollback --------------------------------------------------------------

class LambdaTarget(AwsPlace):
    function: Name
    alias: Name
    version: Annotated[str, Field(pattern=r"^\d+$")] = Field(description="the pinned known-good version")


class LambdaRollbackEntry(_EntryBase):
    kind: Literal["lambda.rollback"]
    target: LambdaTarget


Entry = Annotated[
    Union[SystemdRestartEntry, EcsRollbackEntry, AsgScaleEntry, Ec2RebootEntry, LambdaRollbackEntry],
    Field(discriminator="kind"),
]


# What an entry's governor does not hold of an entry (``Whitelist.for_entry``): which alerts
# select it and how its effect is verified (not for deciding), its description and where it
# pages (for people). Every governor history is the shorter for it.
NOT_FOR_DECIDING = ("match", "verify", "description", "paging")


def _for_deciding(kind: type[_EntryBase]) -> type[_EntryBase]:
    """``kind`` as an entry's governor holds it: ``NOT_FOR_DECIDING`` is None and never
    serialized. None, not empty: an entry with no matchers would select every alert, and one
    held here must never be mistaken for it. A subclass: the policy's checks of a kind
    (``isinstance``) hold for both."""
    return create_model(f"Deciding{kind.__name__}", __base__=kind, __module__=__name__,
                        **{name: (None, Field(None, exclude=True)) for name in NOT_FOR_DECIDING})


DecidingEntry = Annotated[
    Union[tuple(_for_deciding(kind) for kind in (SystemdRestartEntry, EcsRollbackEntry, AsgScaleEntry, Ec2RebootEntry,
                                                 LambdaRollbackEntry))],
    Field(discriminator="kind"),
]
