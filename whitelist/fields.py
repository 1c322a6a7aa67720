"""The building blocks every part of the whitelist's schema uses: the kinds, the names and
ids a file may write, the strict base model (unknown keys refused), and the tiers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from .durations import NonNegativeDuration


KINDS = ("systemd.restart", "ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")
AWS_KINDS = ("ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")

Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:@/\-]+$")]
EntryId = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")]
Person = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.@\-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _account_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads 012345678901 as a number and drops the leading zero: make people quote it.
        raise PydanticCustomError("account_quoted", "write the account id in quotes (\"123456789012\"): a YAML number loses leading zeros")
    return value


Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$", description="e.g. eu-west-1")]
Account = Annotated[str, BeforeValidator(_account_id), Field(pattern=r"^\d{12}$", description="12-digit AWS account id")]



# Defaults reflect how far a mistake would spread: one machine heals by itself, a
# whole service needs a person, anything fleet- or region-wide needs two.
DEFAULT_TIERS: dict[str, int] = {"instance": 0, "service": 1, "fleet": 2, "region": 2}


CHANNELS = ("ssh", "slack", "token", "unverified")
VERIFIED_CHANNELS = ["ssh", "slack", "token"]


# The name of an environment variable of the worker's, never a secret itself: the whitelist
# is reviewed in git, routing keys are not.
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]
Severity = Literal["critical", "error", "warning", "info"]


class Paging(Strict):
    """Where an incident of this tier (or entry) pages (PagerDuty Events API v2)."""

    routing_key_env: EnvName | None = Field(
        default=None, description="the variable holding the routing key; default SELFHEAL_PAGERDUTY_ROUTING_KEY")
    escalate_to_env: EnvName | None = Field(
        default=None, description="the next level's routing key, paged too at the escalation time")
    severity: Severity | None = Field(default=None, description="default: by the tier's approvals")


class EntryPaging(Strict):
    """An entry that pages another PagerDuty service than its tier's."""

    routing_key_env: EnvName = Field(description="the variable holding the routing key")


class Tier(Strict):
    approvals: int = Field(ge=0, le=5, description="distinct approvers needed; 0 runs automatically")
    # Which channels an approval may come through to count. "unverified" (a bare Temporal
    # update or signal, a typed name) proves nothing and counts only where listed.
    channels: list[Literal["ssh", "slack", "token", "unverified"]] = Field(
        default_factory=lambda: list(VERIFIED_CHANNELS), min_length=1)
    confirm: bool = Field(default=False, description="an approval must repeat the exact target")
    # An approval given sooner than this after the request is flagged as fast in the audit
    # (it still counts): the signal that people approve without reading.
    min_review: NonNegativeDuration = timedelta(0)
    paging: Paging = Paging()
