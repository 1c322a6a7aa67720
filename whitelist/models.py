"""The whitelist's schema: what a reviewed file may say, and nothing more.

Every model forbids unknown keys, so a typo (``max_capacty``) fails loudly with its
file and line instead of silently dropping a bound. Entries are a union discriminated
by ``kind``; each kind fixes its target and bounds every parameter it takes::

    Whitelist
    ├── metadata            who reviewed it, when
    ├── tiers               blast radius -> approvals needed (0 = automatic)
    ├── groups              approver groups -> people
    ├── people              person -> how they prove it is them (SSH keys, Slack id, token hash)
    ├── attestation_keys    the ingress's public keys (Slack and token approvals)
    └── entries[]           one per allowed remediation
        ├── SystemdRestartEntry   target: unit + host selector; no parameters
        ├── EcsRollbackEntry      target: cluster + service + pinned task definition
        ├── AsgScaleEntry         target: group; bounds: capacity range + max step
        ├── Ec2RebootEntry        target: tag selector + max instances
        └── LambdaRollbackEntry   target: function + alias + pinned version
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .durations import NonNegativeDuration, PositiveDuration
from .matchers import matches_all, parse_matcher

KINDS = ("systemd.restart", "ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")
AWS_KINDS = ("ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")

Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:@/\-]+$")]
EntryId = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")]
Person = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.@\-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Defaults reflect how far a mistake would spread: one machine heals by itself, a
# whole service needs a person, anything fleet- or region-wide needs two.
DEFAULT_TIERS: dict[str, int] = {"instance": 0, "service": 1, "fleet": 2, "region": 2}


CHANNELS = ("ssh", "slack", "token", "unverified")
VERIFIED_CHANNELS = ["ssh", "slack", "token"]


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


def _ssh_public_key(text: str) -> str:
    """An OpenSSH public key line of a kind the signature checks support."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("not an OpenSSH public key line (ssh-ed25519 AAAA... or ssh-rsa AAAA...)") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        raise ValueError("only ssh-ed25519 and ssh-rsa keys are supported")
    return text.strip()


SshKey = Annotated[str, AfterValidator(_ssh_public_key)]
SlackId = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}:[A-Z0-9]{2,20}$", description="TEAM_ID:USER_ID")]
TokenHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the person's ingress token, hex")]


class Identity(Strict):
    """How a person proves who they are: keys they sign with, their Slack user, a token."""

    ssh_keys: list[SshKey] = []
    slack: list[SlackId] = []
    token_sha256: list[TokenHash] = []


class Metadata(Strict):
    reviewed_by: list[Person] = Field(min_length=1)
    reviewed_at: date
    description: str = ""
    # Orders whitelists across hosts: the governor never replaces the current whitelist
    # with one of a lower revision (a worker not yet upgraded, restarted with its old file).
    # Bump it with every change; a clock or a per-process counter could not order two hosts.
    revision: int = Field(0, ge=0)


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


class Drills(Strict):
    """Approval drills, off by default. With ``rate`` above 0, that share of approval
    requests is accompanied by a drill: a deliberately wrong proposal, presented like any
    other, that can never execute (``DrillWorkflow`` has no act stage). Approving it is
    recorded as missed, rejecting it as caught, and the approver is told afterwards."""

    # 1 brings a drill with every request: for a training exercise, and for tests.
    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of approval requests that bring a drill")


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

def _account_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads 012345678901 as a number and drops the leading zero: make people quote it.
        raise PydanticCustomError("account_quoted", "write the account id in quotes (\"123456789012\"): a YAML number loses leading zeros")
    return value


Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$", description="e.g. eu-west-1")]
Account = Annotated[str, BeforeValidator(_account_id), Field(pattern=r"^\d{12}$", description="12-digit AWS account id")]


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


class Whitelist(Strict):
    version: Literal[1] = 1
    metadata: Metadata
    tiers: dict[Name, Tier] = Field(default_factory=lambda: {k: Tier(approvals=v) for k, v in DEFAULT_TIERS.items()})
    groups: dict[Name, list[Person]] = {}
    people: dict[Person, Identity] = {}
    # The ingress's public keys: Slack and token approvals carry its signature.
    attestation_keys: list[SshKey] = []
    drills: Drills = Drills()
    entries: list[Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Whitelist":
        doc = self.model_dump()
        problems = consistency_problems(doc) + escalation_problems(doc) + aws_problems(doc)
        if problems:
            raise PydanticCustomError(
                "whitelist_consistency",
                "{summary}",
                {"summary": "; ".join(msg for _, msg in problems), "problems": problems},
            )
        return self

    def excerpt(self, label_sets: list[dict[str, str]]) -> "WhitelistExcerpt":
        """What one incident needs of this whitelist: all of it but the entries none of its
        alerts' label sets match (all entries when drills are on: a drill proposes an entry
        the alerts did not match). Its size grows with what matched, not with the file, so
        an incident's history does not carry a fleet's whitelist."""
        keep = self.entries if self.drills.rate > 0 else [
            e for e in self.entries if any(matches_all(e.match, labels) for labels in label_sets)]
        return WhitelistExcerpt(**{**self._fields(), "entries": keep}, omitted=len(self.entries) - len(keep))

    def for_entry(self, entry_id: str) -> "Whitelist | None":
        """What deciding on ``entry_id`` needs of this whitelist, and nothing else: its
        tiers, the groups it names and the entry (no other entries, no identities, no
        drills). Its size does not grow with the whitelist, so the governor can be told it
        with every decision's first use. None when there is no such entry."""
        entry = self.entry(entry_id)
        if entry is None:
            return None
        return Whitelist(**{**self._fields(), "groups": {g: self.groups[g] for g in entry.approvers.groups if g in self.groups},
                            "people": {}, "attestation_keys": [], "drills": Drills(), "entries": [entry]})  # plain, also from an excerpt

    def _fields(self) -> dict:
        """This whitelist's fields as a plain ``Whitelist`` has them (an excerpt's own left out)."""
        return {name: getattr(self, name) for name in Whitelist.model_fields}

    def entry(self, entry_id: str) -> SystemdRestartEntry | EcsRollbackEntry | AsgScaleEntry | Ec2RebootEntry | LambdaRollbackEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def approvals_needed(self, entry_id: str) -> int:
        entry = self.entry(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        return self.tiers[entry.blast_radius].approvals

    def highest_tier(self) -> str:
        """The tier needing the most approvals (the first such, in file order)."""
        return max(self.tiers, key=lambda name: self.tiers[name].approvals)

    def approving_tier(self) -> str | None:
        """The tier needing the fewest approvals that still needs someone: what "at least
        one approver" means for this whitelist. None if every tier is automatic."""
        needing = [name for name in self.tiers if self.tiers[name].approvals >= 1]
        return min(needing, key=lambda name: self.tiers[name].approvals) if needing else None

    def escalation_tier(self, entry_id: str) -> str:
        entry = self.entry(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        return entry.autonomy.escalate_to or self.highest_tier()

    def named_people(self) -> list[str]:
        """Everyone the whitelist names: reviewers, approvers, group members, people with identities."""
        named = set(self.metadata.reviewed_by) | set(self.people)
        for members in self.groups.values():
            named.update(members)
        for entry in self.entries:
            named.update(self.allowed_approvers(entry.id))
        return sorted(named)

    def identity(self, person: str) -> Identity:
        return self.people.get(person, Identity())

    def person_for_slack(self, team: str, user: str) -> str | None:
        wanted = f"{team}:{user}"
        return next((name for name, ident in self.people.items() if wanted in ident.slack), None)

    def person_for_token_hash(self, digest: str) -> str | None:
        return next((name for name, ident in self.people.items() if digest in ident.token_sha256), None)

    def allowed_approvers(self, entry_id: str) -> list[str]:
        """Everyone who may approve this entry: its people plus members of its groups."""
        entry = self.entry(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        people = set(entry.approvers.people)
        for group in entry.approvers.groups:
            people.update(self.groups.get(group, []))
        return sorted(people)


class WhitelistExcerpt(Whitelist):
    """A whitelist less the entries an incident's alerts did not match (``Whitelist.excerpt``);
    the file's hash names what it was taken from."""

    entries: list[Entry] = []  # type: ignore[assignment]  # none matched: the incident has no remedy
    omitted: int = Field(0, ge=0)  # entries of the file left out


def consistency_problems(doc: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules that span fields, each problem with the location of the key to blame.

    Works on the plain document (as parsed from YAML, or a model dump) and tolerates
    malformed parts, so the loader can report these alongside field errors in one pass.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    tiers = doc.get("tiers", {k: {"approvals": v} for k, v in DEFAULT_TIERS.items()})
    tiers = tiers if isinstance(tiers, dict) else {}
    groups = doc.get("groups") if isinstance(doc.get("groups"), dict) else {}
    entries = doc.get("entries") if isinstance(doc.get("entries"), list) else []
    seen: dict[Any, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        entry_id = entry.get("id")
        if isinstance(entry_id, str) and entry_id in seen:
            problems.append((("entries", i, "id"), f"duplicate id {entry_id!r} (first used by entries[{seen[entry_id]}])"))
        elif isinstance(entry_id, str):
            seen[entry_id] = i
        radius = entry.get("blast_radius")
        if isinstance(radius, str) and radius not in tiers:
            problems.append(
                (("entries", i, "blast_radius"), f"blast radius {radius!r} has no tier; known tiers: {', '.join(sorted(tiers))}")
            )
        approvers = entry.get("approvers") if isinstance(entry.get("approvers"), dict) else {}
        people = {p for p in approvers.get("people") or [] if isinstance(p, str)}
        for j, group in enumerate(approvers.get("groups") or []):
            if isinstance(group, str) and group not in groups:
                problems.append((("entries", i, "approvers", "groups", j), f"unknown group {group!r}"))
            elif isinstance(group, str) and isinstance(groups[group], list):
                people.update(p for p in groups[group] if isinstance(p, str))
        autonomy = entry.get("autonomy") if isinstance(entry.get("autonomy"), dict) else {}
        escalate_to = autonomy.get("escalate_to")
        if isinstance(escalate_to, str) and escalate_to not in tiers:
            problems.append((("entries", i, "autonomy", "escalate_to"),
                             f"tier {escalate_to!r} does not exist; known tiers: {', '.join(sorted(tiers))}"))
        tier = tiers.get(radius) if isinstance(radius, str) else None
        tier = tier.model_dump() if isinstance(tier, Tier) else tier
        needed = tier.get("approvals") if isinstance(tier, dict) else None
        if isinstance(needed, int) and needed > len(people):
            problems.append(
                (("entries", i, "approvers"), f"blast radius {radius!r} needs {needed} distinct approver(s) but only {len(people)} may approve")
            )
    return problems


def escalation_problems(doc: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every entry can be raised (by autonomy, failure memory, its breaker or a pause): it
    must escalate to a tier that needs people, and name approvers enough to meet the
    highest tier it can be raised to, or an escalated request could never be approved.

    Like ``consistency_problems`` it reads the plain document and tolerates malformed
    parts, so the loader reports these problems in the same pass as field errors.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    raw_tiers = doc.get("tiers", {k: {"approvals": v} for k, v in DEFAULT_TIERS.items()})
    tiers: dict[str, int] = {}
    for name, tier in (raw_tiers.items() if isinstance(raw_tiers, dict) else []):
        tier = tier.model_dump() if isinstance(tier, Tier) else tier
        if isinstance(name, str) and isinstance(tier, dict) and isinstance(tier.get("approvals"), int):
            tiers[name] = tier["approvals"]
    if not tiers:
        return problems
    needing = [t for t in tiers if tiers[t] >= 1]
    if not needing:
        problems.append((("tiers",), "no tier needs an approver, so a pause, a breaker or failure memory could ask no one"))
        return problems
    approving = min(needing, key=tiers.__getitem__)
    highest = max(tiers, key=tiers.__getitem__)
    groups = doc.get("groups") if isinstance(doc.get("groups"), dict) else {}
    entries = doc.get("entries") if isinstance(doc.get("entries"), list) else []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        autonomy = entry.get("autonomy") if isinstance(entry.get("autonomy"), dict) else {}
        escalate_to = autonomy.get("escalate_to", highest)
        if not isinstance(escalate_to, str) or escalate_to not in tiers:
            continue  # reported by consistency_problems or the field checks
        if tiers[escalate_to] == 0:
            problems.append((("entries", i, "autonomy", "escalate_to"),
                             f"tier {escalate_to!r} needs no approver: escalating to it would let the fleet-wide case act alone"))
            continue
        radius = entry.get("blast_radius")
        raised = [t for t in (radius, escalate_to, approving) if isinstance(t, str) and t in tiers]
        worst = max(raised, key=tiers.__getitem__)
        allowed = len(_approvers_of(entry, groups))
        if allowed < tiers[worst]:
            problems.append((("entries", i, "approvers"),
                             f"may be escalated to tier {worst!r}, which needs {tiers[worst]} distinct approver(s), "
                             f"but only {allowed} may approve"))
    return problems


def _approvers_of(entry: dict[str, Any], groups: dict[str, Any]) -> set[str]:
    approvers = entry.get("approvers") if isinstance(entry.get("approvers"), dict) else {}
    people = {p for p in approvers.get("people") or [] if isinstance(p, str)}
    for group in approvers.get("groups") or []:
        members = groups.get(group) if isinstance(group, str) else None
        if isinstance(members, list):
            people.update(p for p in members if isinstance(p, str))
    return people


_TASK_DEFINITION_ARN = re.compile(r"^arn:aws[a-z\-]*:ecs:([^:]+):(\d{12}):task-definition/")


def aws_problems(doc: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every AWS entry names its region and account, and a pinned ARN agrees with them.

    Like ``escalation_problems``, part of the model's own validation, reported by the
    loader with the location of the key to blame.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    entries = doc.get("entries") if isinstance(doc.get("entries"), list) else []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("kind") not in AWS_KINDS or not isinstance(entry.get("target"), dict):
            continue
        target = entry["target"]
        for key in ("region", "account"):
            if key not in target:
                problems.append((("entries", i, "target", key),
                                 f"an AWS target must name its {key}, so the entry cannot act anywhere else"))
        arn = target.get("task_definition")
        match = _TASK_DEFINITION_ARN.match(arn) if isinstance(arn, str) else None
        if match and (match.group(1), match.group(2)) != (target.get("region"), target.get("account")):
            problems.append((("entries", i, "target", "task_definition"),
                             f"the pinned ARN is in {match.group(1)}/{match.group(2)}, not the target's "
                             f"{target.get('region')}/{target.get('account')}"))
    return problems
