"""The policy's own vocabulary: what is asked (``ActionRequest``), what was done before
(``Execution``), and what the policy answers (``Decision``).

It lives inside the trust boundary so that ``whitelist`` imports nothing from the rest of
selfheal; ``selfheal.models`` re-exports these names for the layers above.

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
