"""An IAM policy for the worker: exactly the AWS calls the whitelist's AWS entries make.

``CALLS`` lists, per kind, every call the executors, readers, verifiers and evidence make
(``activities/aws_*.py``). Each entry gets its own statements, one per purpose, named
``<EntryId in CamelCase><Purpose>``: ``rollback-checkout`` gives ``RollbackCheckoutRead``,
``RollbackCheckoutWrite`` and ``RollbackCheckoutAlarms`` (the id's parts between
punctuation, capitalized; the purposes are Read, Tag, Write, Evidence, Alarms). Two ids
that differ only in punctuation (``a-b``, ``a_b``) would collide: the later one gets 2, 3…
(``AB2Read``). Nothing is merged across entries, so each Sid shows one entry's authority.

A shadow entry (``mode: shadow``) is decided, never executed, but its decision and its
diagnosis read the world: ``read_world`` before deciding, for the kinds whose request
needs it (``selfheal.contract.kinds``, ``reads_first``: the group's capacity, the instances'
tags), and the entry's evidence (``activities/aws_evidence.py``). It gets exactly those
reads (``SHADOW_READS``), in the same scopes as an active entry's, and never a write or a
tag; its Sids start with ``Shadow`` (``ShadowScaleQueueWorkersRead``), so a reviewer sees
which statements serve an entry that cannot act, and promoting it shows in the policy's
diff. What only an executor or a verifier reads (``ec2:DescribeInstanceStatus``,
``lambda:GetAlias``) is left out too.

Scoped to the entry's exact ARNs, in its region, account and partition (``aws-cn`` for
``cn-*``, ``aws-us-gov`` for ``us-gov-*``, the ISO partitions likewise):

- ``ecs.rollback``: DescribeServices and UpdateService on ``service/CLUSTER/SERVICE``.
- ``asg.scale``: SetDesiredCapacity on ``autoScalingGroup:*:autoScalingGroupName/GROUP``
  (the ``*`` is the group's UUID, which the whitelist does not know).
- ``ec2.reboot``: RebootInstances and CreateTags on ``instance/*`` in the region and
  account, only where the instance carries every selector tag (``aws:ResourceTag/K``);
  CreateTags only when the request's tag keys are all ``selfheal:reboot``
  (``aws:TagKeys``). ``ec2:CreateAction`` is not used: it is set only when tags are
  applied by a create call (RunInstances…), which this policy does not grant.
- ``lambda.rollback``: GetAlias and UpdateAlias on the function ARN; FilterLogEvents on
  its log group ``/aws/lambda/FUNCTION`` (and ``:*``, its streams).
- every AWS entry: DescribeAlarmHistory on ``alarm:*`` in its region and account.

What IAM cannot narrow, and what then bounds it:

- ``UNSCOPABLE``: Describe calls with no resource-level permission take ``Resource: "*"``,
  narrowed to the entry's region (``aws:RequestedRegion``); they read, never write.
- UpdateAlias authorizes on the function, not the alias: the executor holds to the
  entry's alias and pinned version. UpdateService is scoped to the service, not to the
  revision it names (``ecs:task-definition`` exists, but how ECS fills it for a
  ``family:revision`` request is unverified here, so it is not relied on): the executor
  sends only the pinned revision. The tag's value (a hash) is not constrained.
- ``sts:GetCallerIdentity`` (``UNGRANTED``) needs no permission, so none is granted.
- ``systemd.restart`` entries get nothing here (sudoers, or SSM documents via
  ``extra_statements``). A whitelist with no AWS entry gives an empty ``Statement`` list.

Whitelist names cannot hold ``*`` or ``?``, so every ARN and tag value is literal.
IAM limits policy size (managed: 6,144 characters without whitespace; inline on a role:
10,240): a large whitelist may need its policy split across several.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from selfheal.activities.aws_ec2 import REBOOT_TAG
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import AWS_KINDS

VERSION = "2012-10-17"

# kind -> (IAM action, purpose). One statement per purpose, so a purpose's actions must
# share one scope (checked). "account" is the executors' account check: never granted.
_EVERY = (("sts:GetCallerIdentity", "account"), ("cloudwatch:DescribeAlarmHistory", "alarms"))
CALLS: dict[str, tuple[tuple[str, str], ...]] = {
    "ecs.rollback": _EVERY + (
        ("ecs:DescribeServices", "read"),  # read, verify, and evidence (events, deployments)
        ("ecs:UpdateService", "write"),
    ),
    "asg.scale": _EVERY + (
        ("autoscaling:DescribeAutoScalingGroups", "read"),  # read and verify
        ("autoscaling:SetDesiredCapacity", "write"),
        ("autoscaling:DescribeScalingActivities", "evidence"),
    ),
    "ec2.reboot": _EVERY + (
        ("ec2:DescribeInstances", "read"),  # read: the candidates' tags
        ("ec2:DescribeInstanceStatus", "read"),  # verify: status checks
        ("ec2:CreateTags", "tag"),  # the selfheal:reboot marker, before each reboot
        ("ec2:RebootInstances", "write"),
    ),
    "lambda.rollback": _EVERY + (
        ("lambda:GetAlias", "read"),  # read and verify
        ("lambda:UpdateAlias", "write"),
        ("logs:FilterLogEvents", "evidence"),  # the function's log group
    ),
}
PURPOSES = ("read", "tag", "write", "evidence", "alarms")

# What a shadow entry's decision and diagnosis read (nothing an executor or a verifier
# alone calls): its kind's read_world calls when its request needs a read of the world
# (asg.scale, ec2.reboot), and its evidence (aws_evidence.py). Checked against CALLS below.
_ALARMS = "cloudwatch:DescribeAlarmHistory"  # evidence, when the alert names an alarm
SHADOW_READS: dict[str, frozenset[str]] = {
    "ecs.rollback": frozenset({"ecs:DescribeServices", _ALARMS}),  # evidence: service events, deployments
    "asg.scale": frozenset({"autoscaling:DescribeAutoScalingGroups",  # read_world: the current capacity
                            "autoscaling:DescribeScalingActivities", _ALARMS}),  # evidence
    "ec2.reboot": frozenset({"ec2:DescribeInstances", _ALARMS}),  # read_world: the candidates' tags
    "lambda.rollback": frozenset({"logs:FilterLogEvents", _ALARMS}),  # evidence: the function's log group
}
SHADOW_PURPOSES = ("read", "evidence", "alarms")
for _kind, _reads in SHADOW_READS.items():  # only reads, each one a call its kind makes
    if not _reads <= {a for a, p in CALLS[_kind] if p in SHADOW_PURPOSES}:
        raise AssertionError(f"SHADOW_READS[{_kind!r}] names a call that is not one of its kind's reads")

UNGRANTED = {
    "sts:GetCallerIdentity": "AWS authorizes it for every principal, even under an explicit Deny: "
                             "a grant would add nothing",
}

_NO_RESOURCE = "supports no resource-level permission (Service Authorization Reference); narrowed to the entry's region"
UNSCOPABLE = {
    "autoscaling:DescribeAutoScalingGroups": f"Auto Scaling's Describe calls: {_NO_RESOURCE}",
    "autoscaling:DescribeScalingActivities": f"Auto Scaling's Describe calls: {_NO_RESOURCE}",
    "ec2:DescribeInstances": f"EC2's Describe calls: {_NO_RESOURCE}",
    "ec2:DescribeInstanceStatus": f"EC2's Describe calls: {_NO_RESOURCE}",
}

# The resource part of each scopable action's ARN, from the entry's target.
_RESOURCES = {
    "ecs:DescribeServices": lambda t: [f"service/{t.cluster}/{t.service}"],
    "ecs:UpdateService": lambda t: [f"service/{t.cluster}/{t.service}"],
    "autoscaling:SetDesiredCapacity": lambda t: [f"autoScalingGroup:*:autoScalingGroupName/{t.group}"],
    "ec2:CreateTags": lambda t: ["instance/*"],
    "ec2:RebootInstances": lambda t: ["instance/*"],
    "lambda:GetAlias": lambda t: [f"function:{t.function}"],
    "lambda:UpdateAlias": lambda t: [f"function:{t.function}"],
    "logs:FilterLogEvents": lambda t: [f"log-group:/aws/lambda/{t.function}", f"log-group:/aws/lambda/{t.function}:*"],
    "cloudwatch:DescribeAlarmHistory": lambda t: ["alarm:*"],
}

_PARTITIONS = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"), ("us-iso-", "aws-iso"),
               ("eu-isoe-", "aws-iso-e"), ("us-isof-", "aws-iso-f"))


def partition(region: str) -> str:
    return next((p for prefix, p in _PARTITIONS if region.startswith(prefix)), "aws")


def _scope(entry, action: str) -> tuple[Any, dict | None]:
    """(Resource, Condition) of one action for one entry."""
    t = entry.target
    if action in UNSCOPABLE:
        return "*", {"StringEquals": {"aws:RequestedRegion": t.region}}
    service = action.split(":", 1)[0]
    base = f"arn:{partition(t.region)}:{service}:{t.region}:{t.account}:"
    resources = [base + r for r in _RESOURCES[action](t)]
    if service != "ec2":
        return resources, None
    condition: dict = {"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in sorted(t.tags.items())}}
    if action == "ec2:CreateTags":
        condition["ForAllValues:StringEquals"] = {"aws:TagKeys": [REBOOT_TAG]}
    return resources, condition


def _camel(entry_id: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^a-z0-9]+", entry_id) if p)


def granted(entry) -> list[tuple[str, str]]:
    """(action, purpose) of every call granted to ``entry``: all of its kind's calls, or a
    shadow entry's reads only; never what needs no grant."""
    shadow = entry.mode == "shadow"
    return [(a, p) for a, p in CALLS[entry.kind]
            if a not in UNGRANTED and (not shadow or a in SHADOW_READS[entry.kind])]


def entry_statements(entry, name: str) -> list[dict]:
    t = entry.target
    if t.region is None or t.account is None:
        raise ValueError(f"entry {entry.id!r} names no region or account: its ARNs cannot be exact")
    by_purpose: dict[str, list[str]] = {}
    for action, purpose in granted(entry):
        by_purpose.setdefault(purpose, []).append(action)
    statements = []
    for purpose in PURPOSES:
        actions = by_purpose.get(purpose)
        if not actions:
            continue
        scopes = {json.dumps(_scope(entry, a), sort_keys=True) for a in actions}
        if len(scopes) != 1:  # a statement has one Resource and one Condition for all its actions
            raise AssertionError(f"{entry.kind} {purpose}: actions {actions} need different scopes")
        resources, condition = _scope(entry, actions[0])
        statement = {"Sid": name + purpose.capitalize(), "Effect": "Allow", "Action": actions, "Resource": resources}
        if condition:
            statement["Condition"] = condition
        statements.append(statement)
    return statements


def policy_document(loaded: LoadedWhitelist, extra_statements: Sequence[dict] = ()) -> dict:
    """The policy for every AWS entry of ``loaded``, in file order, then ``extra_statements``.
    A shadow entry gets its reads only (``SHADOW_READS``), under Sids starting ``Shadow``."""
    statements: list[dict] = []
    used: set[str] = set()
    for entry in loaded.whitelist.entries:
        if entry.kind not in AWS_KINDS:
            continue
        base = ("Shadow" if entry.mode == "shadow" else "") + _camel(entry.id)
        name, n = base, 1
        while name in used:  # a-b and a_b: the later one becomes AB2
            n += 1
            name = f"{base}{n}"
        used.add(name)
        statements += entry_statements(entry, name)
    statements += [dict(s) for s in extra_statements]
    sids = [s["Sid"] for s in statements if "Sid" in s]
    if len(sids) != len(set(sids)):
        raise ValueError(f"duplicate Sids: {sorted({s for s in sids if sids.count(s) > 1})}")
    return {"Version": VERSION, "Statement": statements}


def action_projection(policy: dict) -> dict:
    """The same actions on ``"*"`` without conditions: what moto's IAM (actions only) can check."""
    return {"Version": policy["Version"], "Statement": [
        {**{k: v for k, v in s.items() if k != "Condition"}, "Resource": "*"} for s in policy["Statement"]]}
