"""Rules that span a whitelist's fields: each problem with the location of the key to
blame, on the plain document, so the loader reports them beside field errors in one pass."""

from __future__ import annotations

import re
from typing import Any



from .fields import AWS_KINDS, DEFAULT_TIERS, Tier

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
