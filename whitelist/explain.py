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
    approvals = whitelist.tiers[entry.blast_radius].approvals
    if approvals == 0:
        return "runs automatically"
    return f"{approvals} distinct approver(s)" if approvals > 1 else "1 approver"


def explain(whitelist: Whitelist, entry_id: str) -> str:
    entry = whitelist.entry(entry_id)
    if entry is None:
        raise KeyError(entry_id)
    approvals = whitelist.tiers[entry.blast_radius].approvals
    approvers = whitelist.allowed_approvers(entry_id)
    lines = [f"{entry.id} ({entry.kind})"]
    if entry.description:
        lines.append(f"  {entry.description.strip()}")
    lines.append(f"  Allows:      {action_words(entry)}, and nothing else.")
    lines.append(f"  Bounds:      {bounds_words(entry)}.")
    if approvals == 0:
        who = "runs automatically; nobody needs to approve"
    else:
        groups = f" (groups: {', '.join(entry.approvers.groups)})" if entry.approvers.groups else ""
        who = f"waits for {approvals} distinct approver(s) among {', '.join(approvers)}{groups}"
    lines.append(f"  Approval:    blast radius {entry.blast_radius!r}: {who}.")
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
    return "\n".join(lines)
