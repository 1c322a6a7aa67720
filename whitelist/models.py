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

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .entries import (  # noqa: F401 (the schema's parts, re-exported: one import for a reader)
    Approvers, AsgBounds, AsgScaleEntry, AsgTarget, Autonomy, AwsPlace, Breaker, Ec2RebootEntry, Ec2Target,
    NOT_FOR_DECIDING, DecidingEntry, EcsRollbackEntry, EcsTarget, Entry, FailureMemory, HttpCheck, LambdaRollbackEntry, LambdaTarget, RateLimit,
    SystemdRestartEntry, SystemdTarget, Verify,
)
from .fields import (  # noqa: F401
    AWS_KINDS, CHANNELS, DEFAULT_TIERS, KINDS, VERIFIED_CHANNELS, EntryId, Name, Paging, Person, Strict, Tier,
)
from .matchers import matches_all
from .rules import aws_problems, consistency_problems, escalation_problems


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


class Drills(Strict):
    """Approval drills, off by default. With ``rate`` above 0, that share of approval
    requests is accompanied by a drill: a deliberately wrong proposal, presented like any
    other, that can never execute (``DrillWorkflow`` has no act stage). Approving it is
    recorded as missed, rejecting it as caught, and the approver is told afterwards."""

    # 1 brings a drill with every request: for a training exercise, and for tests.
    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of approval requests that bring a drill")



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

    def for_entry(self, entry_id: str) -> "Policy | None":
        """What deciding on ``entry_id`` needs of this whitelist, and nothing else: the
        tiers it can reach, the groups it names and the entry, less what is for people (its
        description, where it pages, the file's metadata) and what is not for deciding (its
        alert matchers, its verification). Its size does not grow with the whitelist, so the
        governor can be told it with every decision's first use. None when there is no such
        entry."""
        entry = self.entry(entry_id)
        if entry is None:
            return None
        # Only the tiers a decision on it can reach: its own, the one a raise asks for, and
        # the one autonomy escalates to (each is still the first of its kind in file order).
        reach = {entry.blast_radius, self.approving_tier(), self.escalation_tier(entry_id)}
        return Policy(tiers={n: t for n, t in self.tiers.items() if n in reach},
                      groups={g: self.groups[g] for g in entry.approvers.groups if g in self.groups},
                      entries=[entry.model_dump(exclude=set(NOT_FOR_DECIDING))])

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

    def confirms(self, tier: str | None) -> bool:
        """Whether the tier of that name asks an approval to type the target again."""
        level = self.tiers.get(tier or "")
        return level is not None and level.confirm

    def paging(self, entry_id: str, tier: str | None) -> "Paging":
        """Where an incident of ``entry_id`` decided in ``tier`` pages: the entry's routing
        key over its tier's, the tier's next level, and a severity (by default from how many
        people the tier needs: none warning, one error, more critical)."""
        entry = self.entry(entry_id)
        level = self.tiers.get(tier or "") or (self.tiers.get(entry.blast_radius) if entry else None)
        own = level.paging if level else Paging()
        needs = level.approvals if level else 1
        return Paging(
            routing_key_env=(entry.paging.routing_key_env if entry and entry.paging else None) or own.routing_key_env,
            escalate_to_env=own.escalate_to_env,
            severity=own.severity or ("warning" if needs == 0 else "error" if needs == 1 else "critical"))

    def pages(self) -> bool:
        """Whether any tier or entry names a routing key of its own."""
        return any(t.paging.routing_key_env or t.paging.escalate_to_env for t in self.tiers.values()) or any(
            e.paging and e.paging.routing_key_env for e in self.entries)

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


class Policy(Whitelist):
    """What an entry's governor holds of a whitelist (``Whitelist.for_entry``): the one entry
    as deciding reads it, the tiers and groups it reaches. Named by the hash of the file it
    was taken from, which has the metadata."""

    metadata: Metadata | None = None  # type: ignore[assignment]
    entries: list[DecidingEntry] = Field(min_length=1, max_length=1)  # type: ignore[assignment]
