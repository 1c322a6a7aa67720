"""The figures ``selfheal review`` reports (``selfheal/review/__init__.py`` computes them): the
``--json`` document's schema, so its shape is an interface."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class History(Model):
    since_seconds: float
    retention_days: float | None  # None: the namespace keeps closed incidents forever
    beyond_retention: bool        # --since asks for more than the namespace keeps
    covers_from: AwareDatetime    # the oldest start this review can see


class Counts(Model):
    incidents: int = 0        # closed real incidents in the window
    drills: int = 0           # closed drills in the window
    open_incidents: int = 0   # still running: not counted in the figures
    open_drills: int = 0
    unreadable: list[str] = []  # closed without an audit record (failed, terminated, timed out)
    unmatched: int = 0        # incidents whose alerts matched no entry
    limit: int | None = None
    limit_reached: bool = False


class EntryFigures(Model):
    entry: str
    mode: Literal["active", "shadow"] | None = None  # as in the current whitelist; None: not in it
    incidents: int = 0
    open: int = 0
    autonomous: int = 0          # decided auto, and the executor acted
    asked: int = 0               # decisions that needed people
    approved: int = 0
    rejected: int = 0
    expired: int = 0
    remediated: int = 0
    verification_failed: int = 0
    shadowed: int = 0
    denials: dict[str, int] = {}     # rule -> count
    escalations: dict[str, int] = {}  # see the module docstring
    last_incident: AwareDatetime | None = None


class ApproverFigures(Model):
    person: str
    approved: int = 0
    rejected: int = 0
    refused: int = 0
    approve_rate: float | None = None         # approved / (approved + rejected)
    median_seconds_to_approve: float | None = None
    fast: int = 0                              # approvals sooner than the tier's min_review
    unverified: int = 0                        # approvals that proved nobody, counted or not
    drills_caught: int = 0
    drills_missed: int = 0


class SameAlert(Model):
    incident: str
    entry: str | None
    outcome: str | None
    people: list[str] = []


class ShadowFigures(Model):
    entry: str
    shadowed: int
    would: dict[str, int]              # auto, needs_approval, deny
    would_deny_rules: dict[str, int] = {}
    alerts: list[str]                  # the incident keys (the alert across its episodes)
    same_alerts: list[SameAlert] = []  # real incidents for those keys in the window
    agreed: int = 0                    # the same entry ran for the same alert and cleared it
    rejected: int = 0                  # people rejected the same entry for the same alert
    failed: int = 0                    # the same entry ran for the same alert and did not clear it
    other: int = 0                     # another entry, or nothing, for the same alert
    verdict: Literal["promote", "keep"]
    evidence: list[str]


class DrillSummary(Model):
    drills: int = 0
    caught: int = 0
    missed: int = 0
    unanswered: int = 0
    open: int = 0


class Recommendation(Model):
    kind: Literal["shrink", "denied", "unanswered", "remove", "review_approvals", "unverified", "drill_missed",
                  "promote", "keep_in_shadow"]
    subject: str  # the entry or the person
    text: str


class OpenItem(Model):
    """A workflow still running: listed, not waited for."""

    id: str
    drill: bool = False
    entry: str | None = None


class Review(Model):
    version: Literal[1] = 1
    generated_at: AwareDatetime
    since: str
    history: History
    counts: Counts
    entries: list[EntryFigures]
    approvers: list[ApproverFigures]
    shadow: list[ShadowFigures]
    drills: DrillSummary
    recommendations: list[Recommendation]
    warnings: list[str] = []


# --- reading one record ----------------------------------------------------------------
