"""The policy: may this request run, and if so, who must agree first?

``decide`` is pure. It reads only its arguments, has no clock of its own, and
there is no argument through which a confidence, a rationale or any other text from a
diagnosis could arrive: ``ActionRequest`` forbids extra fields. Every refusal names
the rule that caused it. Checks run in a fixed order and the first failure wins:
entry, target, parameters and bounds, rate limit, cooldown, then the tier: the declared
tier, raised (never lowered) by the governor's state (``effective_tier``).

Windows are half-open: an execution exactly ``window`` (or ``cooldown``) ago no longer
counts. Executions stamped after ``now`` count, so clock skew fails closed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Sequence

from .vocabulary import ActionRequest, Decision, Execution, GovernorView
from .durations import format_duration
from .models import (
    AsgScaleEntry,
    Ec2RebootEntry,
    EcsRollbackEntry,
    LambdaRollbackEntry,
    RateLimit,
    SystemdRestartEntry,
    Whitelist,
)

_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")


def target_of(entry) -> dict[str, str]:
    """The entry's fixed target as the flat mapping an ``ActionRequest`` carries.

    For ``systemd.restart`` the ``host`` here is the entry's selector; a request names
    one concrete host that must match it.
    """
    t = entry.target
    if isinstance(entry, SystemdRestartEntry):
        return {"unit": t.unit, "host": t.host, "scope": t.scope}
    if isinstance(entry, EcsRollbackEntry):
        fixed = {"cluster": t.cluster, "service": t.service, "task_definition": t.task_definition}
    elif isinstance(entry, AsgScaleEntry):
        fixed = {"group": t.group}
    elif isinstance(entry, Ec2RebootEntry):
        fixed = {f"tag:{k}": v for k, v in sorted(t.tags.items())}
    elif isinstance(entry, LambdaRollbackEntry):
        fixed = {"function": t.function, "alias": t.alias, "version": t.version}
    else:
        raise TypeError(f"unknown entry type {type(entry).__name__}")
    # Where it lives is part of the target: a request can name no other account or region
    # (the model requires both of every AWS entry).
    fixed.update({k: v for k, v in (("region", t.region), ("account", t.account)) if v is not None})
    return fixed


def decide(whitelist: Whitelist, request: ActionRequest, history: Sequence[Execution], now: datetime,
           view: GovernorView | None = None) -> Decision:
    """Allow, ask, or refuse ``request``.

    ``view`` is the governor's state for the entry (without the asking incident's own
    claims); without it (a shadow entry, which the governor is never asked about) the
    declared tier stands.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    entry_id = request.entry_id
    entry = whitelist.entry(entry_id)
    if entry is None:
        return Decision.deny(entry_id, "unknown_entry", f"no whitelist entry has id {entry_id!r}")

    refusal = check_request(entry, request)
    if refusal:
        return Decision.deny(entry_id, *refusal)

    targets = targets_of(entry, request)
    refusal = check_limits(entry.rate_limit, entry.cooldown, [h for h in history if h.entry_id == entry_id], now, targets)
    if refusal:
        return Decision.deny(entry_id, *refusal)

    if view is None:
        tier, raised_by = entry.blast_radius, []
    else:
        tier, raised_by = effective_tier(whitelist, entry, targets, view, now)
    extra = {"declared_tier": entry.blast_radius, "raised_by": raised_by, "targets": targets}
    approvals = whitelist.tiers[tier].approvals
    if approvals == 0:
        return Decision.auto(entry_id, tier, **extra)
    return Decision.needs_approval(entry_id, tier, approvals, whitelist.allowed_approvers(entry_id), **extra)


def effective_tier(whitelist: Whitelist, entry, targets: list[str], view: GovernorView, now: datetime) -> tuple[str, list[str]]:
    """The entry's declared tier, raised (never lowered) by what the governor knows.

    Returns the tier and, for every raise, why. The raises:
    - autonomy: acting alone would reach more distinct targets within the window than the
      entry allows (a fleet-wide symptom is a fleet-wide blast radius): the escalation tier;
    - failure memory: an earlier action on one of these targets failed within the window;
    - breaker: the entry's breaker is open;
    - pause: people paused autonomy, for everything or for this entry.
    The last three need at least one approver (the whitelist's approving tier).
    """
    tiers = whitelist.tiers
    declared = entry.blast_radius
    tier, raised_by = declared, []

    def raise_to(candidate: str | None, why: str) -> None:
        # Every reason that alone would raise the declared tier is recorded, even when
        # another already raised it as far; the tier is the highest of them.
        nonlocal tier
        if candidate is None or tiers[candidate].approvals <= tiers[declared].approvals:
            return
        raised_by.append(why)
        if tiers[candidate].approvals > tiers[tier].approvals:
            tier = candidate

    approving = whitelist.approving_tier()
    for hold in view.paused:
        if hold.active(now):
            until = f" until {hold.until.isoformat()}" if hold.until else ""
            raise_to(approving, f"autonomy paused by {hold.by} at {hold.at.isoformat()}{until}: {hold.reason}")
    if view.breaker is not None:
        raise_to(approving, f"breaker open since {view.breaker.at.isoformat()}: {view.breaker.reason}")
    memory = [f for f in view.failures if f.at > now - entry.failure_memory.window and set(f.targets) & set(targets)]
    if memory:
        last = memory[-1]
        raise_to(approving, f"{', '.join(sorted(set(last.targets) & set(targets)))} ended {last.note or 'failed'} in "
                            f"incident {last.incident_id} at {last.at.isoformat()} "
                            f"(within {format_duration(entry.failure_memory.window)})")
    if tiers[declared].approvals == 0:
        # Judged on the declared tier: a pause or a breaker asking one person must not
        # hide that the symptom has become fleet-wide, which needs the escalation tier.
        window = entry.autonomy.window
        recent = {t for act in view.autonomous if act.at > now - window for t in act.targets}
        reach = recent | set(targets)
        # Counted as a set: acting again on a target already counted does not widen. Claims
        # beyond the limit (it was lowered since) fail closed for every target.
        if len(reach) > entry.autonomy.max_targets:
            raise_to(whitelist.escalation_tier(entry.id),
                     f"acting alone on {', '.join(targets)} would reach {len(reach)} distinct targets "
                     f"within {format_duration(window)}; the entry allows {entry.autonomy.max_targets} "
                     f"(already: {', '.join(sorted(recent)) or 'none'})")
    return tier, raised_by


def targets_of(entry, request: ActionRequest) -> list[str]:
    """What a request acts on, as the governor counts targets: the host for a restart,
    each instance for a reboot, and the entry's one fixed target otherwise."""
    if isinstance(entry, SystemdRestartEntry):
        return [request.target.get("host", "")]
    if isinstance(entry, Ec2RebootEntry):
        ids = request.params.get("instance_ids")
        return sorted(ids) if isinstance(ids, list) else []
    return [f"{entry.kind}:" + "/".join(v for _, v in sorted(target_of(entry).items()))]


def check_request(entry, request: ActionRequest) -> tuple[str, str] | None:
    """Target and parameter checks alone, as an executor repeats them before acting."""
    return _check_target(entry, request.target) or _check_params(entry, request.params)


def check_target(entry, target: dict[str, str]) -> tuple[str, str] | None:
    """The target check alone, as a reader repeats it before reading the world."""
    return _check_target(entry, target)


def check_limits(limit: RateLimit, cooldown: timedelta, history: Sequence[Execution], now: datetime,
                 targets: Sequence[str] | None = None) -> tuple[str, str] | None:
    """Rate limit (per entry: a hard cap, even for approved actions) and cooldown (per
    target: it stops one target flapping, not others from healing) over one entry's
    executions; ``(rule, reason)`` when refused. ``targets=None`` applies the cooldown to
    every execution, as before targets were recorded; so does an execution without them.
    """
    recent = [h for h in history if h.started_at > now - limit.window]
    if len(recent) >= limit.max_executions:
        return (
            "rate_limit",
            f"{len(recent)} execution(s) in the last {format_duration(limit.window)}; the limit is {limit.max_executions}",
        )
    same = [h for h in history if targets is None or not h.targets or set(h.targets) & set(targets)]
    if cooldown and any(h.started_at > now - cooldown for h in same):
        last = max(h.started_at for h in same)
        on = f" on {', '.join(sorted(targets))}" if targets else ""
        return "cooldown", f"last execution{on} at {last.isoformat()} is within the {format_duration(cooldown)} cooldown"
    return None


def _check_target(entry, requested: dict[str, str]) -> tuple[str, str] | None:
    fixed = target_of(entry)
    if set(requested) != set(fixed):
        return "target", f"target keys {sorted(requested)} differ from the entry's {sorted(fixed)}"
    for key, want in fixed.items():
        got = requested[key]
        if isinstance(entry, SystemdRestartEntry) and key == "host":
            if not _HOSTNAME.fullmatch(got) or not fnmatchcase(got, want):
                return "target", f"host {got!r} does not match the entry's host selector {want!r}"
        elif got != want:
            return "target", f"target {key} {got!r} is not the entry's {want!r}"
    return None


def _check_params(entry, params: dict) -> tuple[str, str] | None:
    if isinstance(entry, AsgScaleEntry):
        return _check_asg(entry, params)
    if isinstance(entry, Ec2RebootEntry):
        return _check_ec2(entry, params)
    if params:
        return "params", f"{entry.kind} takes no parameters; got {sorted(params)}"
    return None


def _int_param(params: dict, name: str) -> int | None:
    value = params.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_asg(entry: AsgScaleEntry, params: dict) -> tuple[str, str] | None:
    expected = {"desired_capacity", "current_capacity"}
    if set(params) != expected:
        return "params", f"asg.scale takes exactly {sorted(expected)}; got {sorted(params)}"
    desired, current = _int_param(params, "desired_capacity"), _int_param(params, "current_capacity")
    if desired is None or current is None:
        return "params", "desired_capacity and current_capacity must be whole numbers"
    b = entry.bounds
    if desired < b.min_capacity:
        return "bounds.min_capacity", f"desired_capacity {desired} is below min_capacity {b.min_capacity}"
    if desired > b.max_capacity:
        return "bounds.max_capacity", f"desired_capacity {desired} is above max_capacity {b.max_capacity}"
    if abs(desired - current) > b.max_step:
        return "bounds.max_step", f"changing capacity from {current} to {desired} exceeds max_step {b.max_step}"
    if desired == current:
        return "params", f"desired_capacity {desired} equals current_capacity: nothing to do"
    return None


def _check_ec2(entry: Ec2RebootEntry, params: dict) -> tuple[str, str] | None:
    if set(params) != {"instance_ids"}:
        return "params", f"ec2.reboot takes exactly ['instance_ids']; got {sorted(params)}"
    ids = params["instance_ids"]
    if not isinstance(ids, list) or not ids:
        return "params", "instance_ids must be a non-empty list"
    if len(set(ids)) != len(ids):
        return "params", "instance_ids lists an instance twice"
    if len(ids) > entry.target.max_instances:
        return "target.max_instances", f"{len(ids)} instances requested; max_instances is {entry.target.max_instances}"
    bad = [i for i in ids if not _INSTANCE_ID.fullmatch(i)]
    if bad:
        return "params", f"not EC2 instance ids: {bad}"
    return None
