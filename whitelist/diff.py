"""A whitelist change in plain words, each line marked as widening or narrowing authority.

About 300 lines on purpose: one comparison per field of the schema, in the schema's order.

``diff(old, new)`` compares two loaded whitelists field by field and says, for the person
reviewing the pull request, what the change adds or removes: new entries, wider targets or
host globs, looser bounds, higher rate limits, lower tiers, new approvers and keys. Every
field of the format has a rule below (``RULES``, keyed by path; ``*`` is any one name). A
field without one is reported as widening: a new field can never slip through unread
(a test walks the schema and fails when a field has no rule).

Pure: it imports nothing from the rest of selfheal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, Callable, Literal

from .durations import format_duration
from .models import Whitelist

Direction = Literal["widens", "narrows", "neutral"]
Path = tuple[str, ...]
GLOB = frozenset("*?[")


@dataclass(frozen=True)
class Change:
    direction: Direction
    path: str      # where, dotted (entries.restart-api.rate_limit.max_executions)
    words: str     # what it means for authority, in plain words


@dataclass(frozen=True)
class _Context:
    old: Whitelist
    new: Whitelist


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if value is None:
        return "none"
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    return str(value)


# --- rule builders ------------------------------------------------------------------
# A rule answers three questions about its path: a value changed, a name or list item
# was added, a name or list item was removed. Each answer is (direction, words).

@dataclass(frozen=True)
class Rule:
    changed: Callable[[Any, Any, Path, _Context], tuple[Direction, str]] | None = None
    added: Callable[[Any, Path, _Context], tuple[Direction, str]] | None = None
    removed: Callable[[Any, Path, _Context], tuple[Direction, str]] | None = None


def higher_widens(what: str) -> Rule:
    def changed(old, new, path, ctx):
        return ("widens" if new > old else "narrows"), f"{what}: {_show(old)} -> {_show(new)}"
    return Rule(changed=changed)


def lower_widens(what: str) -> Rule:
    def changed(old, new, path, ctx):
        return ("widens" if new < old else "narrows"), f"{what}: {_show(old)} -> {_show(new)}"
    return Rule(changed=changed)


def any_change_widens(what: str) -> Rule:
    return Rule(changed=lambda old, new, path, ctx: ("widens", f"{what}: {_show(old)} -> {_show(new)}"))


def neutral(what: str) -> Rule:
    return Rule(changed=lambda old, new, path, ctx: ("neutral", f"{what}: {_show(old)} -> {_show(new)}"),
                added=lambda value, path, ctx: ("neutral", f"{what}: added {_show(value)}"),
                removed=lambda value, path, ctx: ("neutral", f"{what}: removed {_show(value)}"))


def members(what: str, adding: Direction = "widens") -> Rule:
    """A set of names or keys: adding one widens (or narrows, for requirements)."""
    removing: Direction = "narrows" if adding == "widens" else "widens"
    return Rule(added=lambda value, path, ctx: (adding, f"{what}: adds {_show(value)}"),
                removed=lambda value, path, ctx: (removing, f"{what}: removes {_show(value)}"))


def became(what: str, wider: Any) -> Rule:
    """A switch whose ``wider`` value allows more (mode active, confirm false...)."""
    def changed(old, new, path, ctx):
        return ("widens" if new == wider else "narrows"), f"{what}: {_show(old)} -> {_show(new)}"
    return Rule(changed=changed)


def _tier_strictness(wl: Whitelist, name: str | None) -> tuple[int, frozenset, bool, timedelta] | None:
    tier = wl.tiers.get(name or "")
    return (tier.approvals, frozenset(tier.channels), tier.confirm, tier.min_review) if tier else None


def _compare_tiers(old_name, new_name, ctx: _Context, old_default: str | None = None, new_default: str | None = None):
    old = _tier_strictness(ctx.old, old_name or old_default)
    new = _tier_strictness(ctx.new, new_name or new_default)
    if old is None or new is None:
        return "widens", "an unknown tier"
    looser = new[0] < old[0] or not new[1] <= old[1] or (old[2] and not new[2]) or new[3] < old[3]
    stricter = new[0] > old[0] or not old[1] <= new[1] or (new[2] and not old[2]) or new[3] > old[3]
    said = f"{old_name or old_default} ({old[0]} approval(s)) -> {new_name or new_default} ({new[0]} approval(s))"
    return ("widens" if looser else "narrows" if stricter else "neutral"), said


def blast_radius() -> Rule:
    def changed(old, new, path, ctx):
        direction, said = _compare_tiers(old, new, ctx)
        return direction, f"tier {said}" + (" (fewer approvals, more channels or a weaker check)" if direction == "widens" else "")
    return Rule(changed=changed)


def escalate_to() -> Rule:
    def changed(old, new, path, ctx):
        direction, said = _compare_tiers(old, new, ctx, ctx.old.highest_tier(), ctx.new.highest_tier())
        return direction, f"escalates to {said}"
    return Rule(changed=changed)


def host() -> Rule:
    def changed(old, new, path, ctx):
        # Narrower only when every host the new selector names, the old one named too.
        if not GLOB & set(new) and fnmatchcase(new, old):
            return "narrows", f"host selector {old!r} -> {new!r} (a subset)"
        return "widens", f"host selector {old!r} -> {new!r} (other or more hosts)"
    return Rule(changed=changed)


def verify_http() -> Rule:
    def changed(old, new, path, ctx):
        if old is None:
            return "narrows", f"adds an HTTP check {new['url']} (expects {new['expect_status']})"
        if new is None:
            return "widens", f"drops the HTTP check {old['url']}"
        return "widens", "changes the HTTP check"
    return Rule(changed=changed)


def entry_rule() -> Rule:
    def added(value, path, ctx):
        entry = ctx.new.entry(path[-1])
        tier = ctx.new.tiers[entry.blast_radius]
        mode = " (shadow: never executes)" if entry.mode == "shadow" else ""
        who = "by itself" if tier.approvals == 0 else f"after {tier.approvals} approval(s)"
        return ("widens" if entry.mode == "active" else "neutral"), f"new entry: {entry.kind} {who}{mode}"
    return Rule(added=added, removed=lambda value, path, ctx: ("narrows", f"entry removed ({value.get('kind')})"))


def person_rule() -> Rule:
    def added(value, path, ctx):
        keys = sum(len(v) for v in value.values())
        return ("widens" if keys else "neutral"), f"new person with {keys} way(s) to prove an approval"
    return Rule(added=added, removed=lambda value, path, ctx: ("narrows", "person removed with their identities"))


def group_rule() -> Rule:
    return Rule(added=lambda value, path, ctx: ("neutral", f"new group ({', '.join(value) or 'empty'}): grants nothing until an entry names it"),
                removed=lambda value, path, ctx: ("narrows", "group removed"))


def tier_rule() -> Rule:
    return Rule(added=lambda value, path, ctx: ("neutral", f"new tier ({value['approvals']} approval(s)): grants nothing until an entry uses it"),
                removed=lambda value, path, ctx: ("neutral", "tier removed (entries that used it are listed on their own)"))


E = ("entries", "*")
RULES: dict[Path, Rule] = {
    ("version",): any_change_widens("format version"),
    ("metadata", "reviewed_by"): neutral("reviewed by"),
    ("metadata", "reviewed_at"): neutral("reviewed at"),
    ("metadata", "description"): neutral("description"),
    # Orders whitelists for the governor; what the file allows is in its other fields.
    ("metadata", "revision"): neutral("revision"),
    ("tiers", "*"): tier_rule(),
    ("tiers", "*", "approvals"): lower_widens("approvals needed"),
    ("tiers", "*", "channels"): members("approval channels that count"),
    ("tiers", "*", "confirm"): became("approvers must repeat the target", False),
    ("tiers", "*", "min_review"): lower_widens("min_review (sooner approvals stop being flagged fast)"),
    # Who is woken, not what may run or who must agree.
    ("tiers", "*", "paging", "routing_key_env"): neutral("PagerDuty routing key variable"),
    ("tiers", "*", "paging", "escalate_to_env"): neutral("PagerDuty next level's routing key variable"),
    ("tiers", "*", "paging", "severity"): neutral("PagerDuty severity"),
    ("groups", "*"): group_rule(),
    ("groups", "*", "[]"): members("group members"),
    ("people", "*"): person_rule(),
    ("people", "*", "ssh_keys"): members("SSH keys that sign approvals"),
    ("people", "*", "slack"): members("Slack users that approve as this person"),
    ("people", "*", "token_sha256"): members("ingress tokens that approve as this person"),
    ("attestation_keys",): members("ingress keys trusted to attest Slack and token approvals"),
    ("drills", "rate"): lower_widens("approval drill rate (fewer drills check fewer approvals)"),
    ("entries",): Rule(),
    E: entry_rule(),
    E + ("id",): any_change_widens("id"),
    E + ("kind",): any_change_widens("kind of action"),
    E + ("description",): neutral("description"),
    E + ("paging", "routing_key_env"): neutral("PagerDuty routing key variable"),
    E + ("blast_radius",): blast_radius(),
    E + ("approvers", "people"): members("approvers"),
    E + ("approvers", "groups"): members("approver groups"),
    E + ("rate_limit", "max_executions"): higher_widens("rate limit, executions per window"),
    E + ("rate_limit", "window"): lower_widens("rate limit window"),
    E + ("cooldown",): lower_widens("cooldown"),
    # An entry matches when every matcher does: one more narrows, one fewer widens.
    E + ("match",): members("alert matchers", adding="narrows"),
    E + ("verify", "timeout"): higher_widens("verification timeout"),
    E + ("verify", "http"): verify_http(),
    E + ("verify", "http", "url"): any_change_widens("HTTP check URL"),
    E + ("verify", "http", "expect_status"): any_change_widens("HTTP check expected status"),
    E + ("verify", "alert_resolves"): became("verification waits for the alert to resolve", False),
    E + ("autonomy", "max_targets"): higher_widens("autonomous targets before escalating"),
    E + ("autonomy", "window"): lower_widens("autonomy window"),
    E + ("autonomy", "escalate_to"): escalate_to(),
    E + ("failure_memory", "window"): lower_widens("failure memory"),
    E + ("breaker", "failures"): higher_widens("failures that open the breaker"),
    E + ("breaker", "window"): lower_widens("breaker window"),
    E + ("mode",): became("mode", "active"),
    E + ("target", "host"): host(),
    E + ("target", "unit"): any_change_widens("systemd unit"),
    E + ("target", "scope"): any_change_widens("systemd manager"),
    E + ("target", "region"): any_change_widens("AWS region"),
    E + ("target", "account"): any_change_widens("AWS account"),
    E + ("target", "cluster"): any_change_widens("ECS cluster"),
    E + ("target", "service"): any_change_widens("ECS service"),
    E + ("target", "task_definition"): any_change_widens("pinned task definition"),
    E + ("target", "group"): any_change_widens("Auto Scaling group"),
    E + ("target", "function"): any_change_widens("Lambda function"),
    E + ("target", "alias"): any_change_widens("Lambda alias"),
    E + ("target", "version"): any_change_widens("pinned Lambda version"),
    # Instances must carry every tag: one more narrows, one fewer (or another value) widens.
    E + ("target", "tags", "*"): Rule(changed=any_change_widens("required tag value").changed,
                                      added=lambda v, path, ctx: ("narrows", f"instances must also carry the tag {path[-1]}={v}"),
                                      removed=lambda v, path, ctx: ("widens", f"instances no longer need the tag {path[-1]}={v}")),
    E + ("target", "max_instances"): higher_widens("instances per action"),
    E + ("bounds", "min_capacity"): lower_widens("minimum capacity"),
    E + ("bounds", "max_capacity"): higher_widens("maximum capacity"),
    E + ("bounds", "max_step"): higher_widens("largest capacity step"),
}
UNCLASSIFIED = "a field this command does not classify, so it counts as widening"


def rule_for(path: Path) -> Rule | None:
    for pattern, rule in RULES.items():
        if len(pattern) == len(path) and all(p == "*" or p == q for p, q in zip(pattern, path)):
            return rule
    return None


def _document(wl: Whitelist) -> dict[str, Any]:
    """The effective whitelist (defaults filled in), entries keyed by id."""
    doc = wl.model_dump(mode="python")
    doc["entries"] = {e["id"]: e for e in doc["entries"]}
    return doc


def _where(path: Path) -> str:
    return ".".join(path)


def _emit(out: list[Change], path: Path, answer: tuple[Direction, str] | None, fallback: str) -> None:
    direction, words = answer if answer else ("widens", f"{fallback} ({UNCLASSIFIED})")
    out.append(Change(direction, _where(path), words))


def _walk(path: Path, old: Any, new: Any, ctx: _Context, out: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            sub = path + (str(key),)
            rule = rule_for(sub)
            if key not in old:
                _emit(out, sub, rule.added(new[key], sub, ctx) if rule and rule.added else None, f"added {_show(new[key])}")
            elif key not in new:
                _emit(out, sub, rule.removed(old[key], sub, ctx) if rule and rule.removed else None, f"removed {_show(old[key])}")
            else:
                _walk(sub, old[key], new[key], ctx, out)
        return
    rule = rule_for(path)
    if isinstance(old, list) and isinstance(new, list):
        rule = rule_for(path + ("[]",)) or rule  # a rule of its own for the items, where the list's path has one
        for item in [i for i in new if i not in old]:
            _emit(out, path, rule.added(item, path, ctx) if rule and rule.added else None, f"adds {_show(item)}")
        for item in [i for i in old if i not in new]:
            _emit(out, path, rule.removed(item, path, ctx) if rule and rule.removed else None, f"removes {_show(item)}")
        return
    _emit(out, path, rule.changed(old, new, path, ctx) if rule and rule.changed else None, f"{_show(old)} -> {_show(new)}")


def diff(old: Whitelist, new: Whitelist) -> list[Change]:
    """Every change from ``old`` to ``new``, widening first."""
    out: list[Change] = []
    _walk((), _document(old), _document(new), _Context(old, new), out)
    order = {"widens": 0, "narrows": 1, "neutral": 2}
    return sorted(out, key=lambda c: order[c.direction])


def widens(changes: list[Change]) -> bool:
    return any(c.direction == "widens" for c in changes)
