"""The policy's own vocabulary: what is asked (``ActionRequest``), what was done before
(``Execution``, and the governor's ``GovernorView`` of autonomous acts, failures, breaker
and pauses), and what the policy answers (``Decision``).

It lives inside the trust boundary so that ``whitelist`` imports nothing from the rest of
selfheal; ``selfheal.contract`` re-exports these names for the layers above.

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
    """One past execution of an entry, as counted by rate limits and cooldowns.

    ``targets`` are what it acted on (see ``policy.targets_of``); empty for executions
    recorded before targets were, which then count against every target (fail closed).
    ``autonomous`` is whether it ran without any approval.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_id: str
    started_at: AwareDatetime
    incident_id: str = ""
    targets: list[str] = []
    autonomous: bool = False


class Act(BaseModel):
    """Something that happened to targets of an entry: a claim to act alone, or a failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[str]
    at: AwareDatetime
    incident_id: str
    note: str = ""  # a failure's outcome ("verification_failed", "failed")


class Hold(BaseModel):
    """A pause or an open breaker: who or what took autonomy away, when, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str
    at: AwareDatetime
    reason: str
    until: AwareDatetime | None = None  # a pause that ends by itself

    def active(self, now) -> bool:
        return self.until is None or now < self.until


class GovernorView(BaseModel):
    """What the governor knows about one entry across incidents, as the policy reads it.

    Plain data: the policy stays pure, and only this state (never a confidence, never
    text from a diagnosis) can raise the tier an action needs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    autonomous: list[Act] = []     # targets claimed for autonomous action, most recent last
    failures: list[Act] = []       # actions that ended verification_failed, or failed after acting
    breaker: Hold | None = None    # the entry's breaker, when open
    paused: list[Hold] = []        # pauses in force for this entry (all entries, or this one)


class Decision(BaseModel):
    """The policy's answer. ``tier`` is the effective tier: the entry's ``declared_tier``,
    raised (never lowered) by the governor's state, each raise with its reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "needs_approval", "deny"]
    entry_id: str
    tier: str | None = None
    approvals: int = 0
    approvers: list[str] = []
    rule: str | None = None
    reason: str | None = None
    declared_tier: str | None = None
    raised_by: list[str] = []  # why the effective tier is above the declared one
    targets: list[str] = []    # what the request acts on

    @classmethod
    def auto(cls, entry_id: str, tier: str, **extra) -> "Decision":
        return cls(kind="auto", entry_id=entry_id, tier=tier, **extra)

    @classmethod
    def needs_approval(cls, entry_id: str, tier: str, approvals: int, approvers: list[str], **extra) -> "Decision":
        return cls(kind="needs_approval", entry_id=entry_id, tier=tier, approvals=approvals, approvers=approvers, **extra)

    @classmethod
    def deny(cls, entry_id: str, rule: str, reason: str) -> "Decision":
        return cls(kind="deny", entry_id=entry_id, rule=rule, reason=reason)

    @property
    def allowed(self) -> bool:
        return self.kind != "deny"

    def __str__(self) -> str:
        raised = f", raised from {self.declared_tier}: {'; '.join(self.raised_by)}" if self.raised_by else ""
        if self.kind == "auto":
            return f"auto ({self.tier} tier)"
        if self.kind == "needs_approval":
            return f"needs {self.approvals} approval(s) from {', '.join(self.approvers)} ({self.tier} tier{raised})"
        return f"deny [{self.rule}]: {self.reason}"
