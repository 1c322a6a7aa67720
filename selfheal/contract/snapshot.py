"""What an incident runs under, recorded once in its history: the whitelist (an
excerpt), the settings of its timers and its diagnoser, and the evidence catalog."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from selfheal.contract.agent import AgentBounds, EvidenceCatalog
from selfheal.whitelist.durations import PositiveDuration
from selfheal.whitelist.models import WhitelistExcerpt


class IncidentSettings(BaseModel):
    """Durations the incident workflow uses. Short values make tests fast; defaults suit on-call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remind_after: PositiveDuration = timedelta(minutes=15)
    escalate_after: PositiveDuration = timedelta(hours=1)
    expire_after: PositiveDuration = timedelta(hours=4)
    diagnose_timeout: PositiveDuration = timedelta(minutes=5)
    remediation_timeout: PositiveDuration = timedelta(minutes=10)
    # How late an activity's heartbeat may be before its worker is presumed dead and the
    # activity retried elsewhere: the bound on how long a killed worker stalls an incident.
    # Every activity heartbeats each second, and the worker sends them at least that often
    # (HEARTBEAT_THROTTLE), so a live worker has seconds of margin.
    remediation_heartbeat: PositiveDuration = timedelta(seconds=5)
    heartbeat_timeout: PositiveDuration = timedelta(seconds=5)
    # Who diagnoses: the rules alone, or a language model beside them (the model's proposal
    # then counts). Recorded with the incident.
    diagnoser: Literal["rules", "llm"] = "rules"
    agent: AgentBounds = AgentBounds()

    @model_validator(mode="after")
    def _in_order(self) -> "IncidentSettings":
        if not self.remind_after <= self.escalate_after <= self.expire_after:
            raise ValueError("approval timers must satisfy remind_after <= escalate_after <= expire_after")
        return self


class LoadPolicy(BaseModel):
    """``load_policy``'s input: the label sets of the incident's alerts so far."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_sets: list[dict[str, str]]


class PolicySnapshot(BaseModel):
    """The whitelist and settings an incident runs under, recorded once in its history.

    ``whitelist`` is the excerpt the incident needs (``Whitelist.excerpt``: the entries its
    alerts matched when it was loaded); ``sha256`` names the whole file it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    whitelist: WhitelistExcerpt
    sha256: str
    source: str
    settings: IncidentSettings
    # Whether the namespace has selfheal's search attributes (a cluster may lack them; the
    # incident then writes none rather than fail).
    search_attributes: bool = False
    # The evidence configuration (hash, sources by id, what each entry may read), when the
    # worker has one; a model diagnosis reads only what it allows.
    evidence: EvidenceCatalog | None = None
    # The notifiers this worker has configured (selfheal.contract.activities.NOTIFIERS);
    # the webhook always runs (it says when no URL is set).
    notifiers: list[Literal["webhook", "slack", "pagerduty"]] = ["webhook"]
    # Page for an automatic incident that healed too (a record for teams that want one):
    # SELFHEAL_PAGERDUTY_PAGE_AUTOMATIC.
    page_automatic: bool = False
