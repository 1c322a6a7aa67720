"""Plain words for a whitelist entry: what it allows, on what, within which bounds, who agrees."""

from __future__ import annotations

from .durations import format_duration
from .models import (
    AsgScaleEntry,
    Ec2RebootEntry,
    EcsRollbackEntry,
    LambdaRollbackEntry,
    SystemdRestartEntry,
    Whitelist,
)


def action_words(entry) -> str:
    t = entry.target
    if isinstance(entry, SystemdRestartEntry):
        return f"restart the systemd unit {t.unit} ({t.scope} manager) on a host matching {t.host!r}"
    if isinstance(entry, EcsRollbackEntry):
        return f"roll the ECS service {t.service} in cluster {t.cluster} back to task definition {t.task_definition}{_place(t)}"
    if isinstance(entry, AsgScaleEntry):
        return f"change the desired capacity of the Auto Scaling group {t.group}{_place(t)}"
    if isinstance(entry, Ec2RebootEntry):
        tags = ", ".join(f"{k}={v}" for k, v in sorted(t.tags.items()))
        return f"reboot EC2 instances tagged {tags}{_place(t)}"
    if isinstance(entry, LambdaRollbackEntry):
        return f"point the alias {t.alias} of Lambda function {t.function} at version {t.version}{_place(t)}"
    raise TypeError(type(entry).__name__)


def _place(target) -> str:
    region, account = getattr(target, "region", None), getattr(target, "account", None)
    return f" in account {account}, region {region}" if region and account else ""


def bounds_words(entry) -> str:
    if isinstance(entry, AsgScaleEntry):
        b = entry.bounds
        return (
            f"desired capacity stays between {b.min_capacity} and {b.max_capacity}, "
            f"changing by at most {b.max_step} per action"
        )
    if isinstance(entry, Ec2RebootEntry):
        return f"at most {entry.target.max_instances} instance(s) per action, each carrying all the tags"
    return "no parameters: the target is fixed by this entry"


KIND_CHECKS = {
    "systemd.restart": "the unit is active and running",
    "ecs.rollback": "the service names the pinned task definition and its PRIMARY deployment completed",
    "asg.scale": "the group has the desired capacity InService",
    "ec2.reboot": "the instances are running and pass status checks",
    "lambda.rollback": "the alias points at the pinned version",
}


def needs_words(whitelist: Whitelist, entry) -> str:
    if entry.mode == "shadow":
        return "never runs (shadow)"
    approvals = whitelist.tiers[entry.blast_radius].approvals
    if approvals == 0:
        return "runs automatically"
    return f"{approvals} distinct approver(s)" if approvals > 1 else "1 approver"


def tier_words(tier) -> str:
    """What a tier asks of an approval beyond the count: how it must arrive, what it repeats,
    and how fast is too fast."""
    parts = [f"counted through {', '.join(tier.channels)}"]
    if "unverified" in tier.channels:
        parts[0] += " (a typed name counts here: it proves nothing)"
    if tier.confirm:
        parts.append("each approval repeats the exact target (--confirm)")
    if tier.min_review:
        parts.append(f"an approval within {format_duration(tier.min_review)} of the request is flagged as fast")
    return "; ".join(parts)


def drills_words(whitelist: Whitelist) -> str:
    rate = whitelist.drills.rate
    if not rate:
        return "no approval drills"
    return (f"{rate:.0%} of approval requests bring a drill: a deliberately wrong proposal that never executes; "
            "approving it is recorded as missed")


def explain(whitelist: Whitelist, entry_id: str) -> str:
    entry = whitelist.entry(entry_id)
    if entry is None:
        raise KeyError(entry_id)
    approvals = whitelist.tiers[entry.blast_radius].approvals
    approvers = whitelist.allowed_approvers(entry_id)
    lines = [f"{entry.id} ({entry.kind})"]
    if entry.description:
        lines.append(f"  {entry.description.strip()}")
    shadow = entry.mode == "shadow"
    if shadow:
        lines.append("  Mode:        SHADOW: decided and recorded like any entry, NEVER executed; nothing below runs "
                     "until the entry is made active (and reviewed again).")
    lines.append(f"  {'Would allow' if shadow else 'Allows:     '}{':' if shadow else ''} {action_words(entry)}, and nothing else.")
    lines.append(f"  Bounds:      {bounds_words(entry)}.")
    if approvals == 0:
        who = "runs automatically; nobody needs to approve"
    else:
        groups = f" (groups: {', '.join(entry.approvers.groups)})" if entry.approvers.groups else ""
        who = f"waits for {approvals} distinct approver(s) among {', '.join(approvers)}{groups}"
    lines.append(f"  Approval:    blast radius {entry.blast_radius!r}: {who}.")
    if approvals:
        lines.append(f"               {tier_words(whitelist.tiers[entry.blast_radius])}.")
    a, fm, br = entry.autonomy, entry.failure_memory, entry.breaker
    lines.append(
        f"  Autonomy:    alone on at most {a.max_targets} target(s) per {format_duration(a.window)}; beyond that the "
        f"request needs the {whitelist.escalation_tier(entry.id)!r} tier's approvals "
        f"({whitelist.tiers[whitelist.escalation_tier(entry.id)].approvals}).")
    lines.append(
        f"  Failures:    a target whose action failed in the last {format_duration(fm.window)} needs at least one "
        f"approver next time; {br.failures} verification failure(s) within {format_duration(br.window)} open the "
        "breaker (every request needs approval until a person closes it).")
    lines.append(
        f"  Limits:      at most {entry.rate_limit.max_executions} execution(s) per "
        f"{format_duration(entry.rate_limit.window)}; cooldown {format_duration(entry.cooldown)} after each."
    )
    lines.append(f"  Selected by: alerts matching all of {', '.join(entry.match)}.")
    checks = [KIND_CHECKS[entry.kind]]
    if entry.verify.http:
        checks.append(f"GET {entry.verify.http.url} answers {entry.verify.http.expect_status}")
    if entry.verify.alert_resolves:
        checks.append("the alert resolves")
    lines.append(f"  Verified by: {'; '.join(checks)}, within {format_duration(entry.verify.timeout)}.")
    lines.append(f"  Drills:      {drills_words(whitelist)}.")
    if not shadow:
        lines.append(f"  Pages:       {paging_words(whitelist, entry)}.")
    return "\n".join(lines)


def paging_brief(route) -> str:
    """A resolved ``Paging`` in a table cell: the key's variable, the severity, the next level."""
    key = f"${route.routing_key_env}" if route.routing_key_env else "the worker's key"
    return f"{key}, {route.severity}" + (f"; then ${route.escalate_to_env}" if route.escalate_to_env else "")


def paging_words(whitelist, entry) -> str:
    """Where the entry's incidents page on-call, when the worker pages (PagerDuty)."""
    route = whitelist.paging(entry.id, entry.blast_radius)
    key = f"the routing key in ${route.routing_key_env}" if route.routing_key_env else "the worker's own routing key"
    upper = (f"; unanswered at the escalation time, also the key in ${route.escalate_to_env}"
             if route.escalate_to_env else "")
    return f"{key}, severity {route.severity}{upper}"
