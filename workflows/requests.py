"""What a request names, built by the workflow from the entry, the alerts and what it read.

Pure functions (the workflow imports them). The diagnosis never names a target: for
``asg.scale`` it supplies only the desired capacity, and the workflow fills in the current
capacity it read itself; for ``ec2.reboot`` the instances are the firing alerts' instance
ids that the read found carrying every tag of the selector.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from selfheal.contract import ActionRequest, Alert, Diagnosis, WorldState
from selfheal.contract.kinds import INSTANCE_ID, MAX_CANDIDATES
from selfheal.whitelist import target_of

GLOB_CHARS = frozenset("*?[")


def instance_ids_in(labels: dict[str, str]) -> list[str]:
    """Instance ids an alert names: ``instance_id``/``InstanceId`` labels, or ``instance`` (id:port)."""
    found = []
    for key in ("instance_id", "InstanceId", "instance"):
        value = labels.get(key, "")
        value = value.rsplit(":", 1)[0] if key == "instance" else value
        if INSTANCE_ID.fullmatch(value) and value not in found:
            found.append(value)
    return found


def first_request(entry, alerts: list[Alert], diagnosis: Diagnosis) -> ActionRequest:
    """The request before the read: capacity from the diagnosis, instances from the alerts."""
    params: dict = {}
    if entry.kind == "asg.scale" and "desired_capacity" in diagnosis.params:
        params = {"desired_capacity": diagnosis.params["desired_capacity"]}
    elif entry.kind == "ec2.reboot":
        ids = sorted({i for a in alerts if a.status == "firing" for i in instance_ids_in(a.labels)})
        params = {"instance_ids": ids[:MAX_CANDIDATES]}
    return ActionRequest(entry_id=entry.id, target=target_of(entry), params=params)


def completed_request(entry, request: ActionRequest, world: WorldState) -> tuple[ActionRequest, str | None]:
    """The request with what the read found, or why there is nothing to ask."""
    facts = world.facts
    if "missing" in facts:
        return request, f"{world.resource}: {facts['missing']}"
    if entry.kind == "asg.scale":
        params = {**request.params, "current_capacity": facts["desired_capacity"]}
    else:
        eligible = list(facts.get("eligible") or [])
        if not eligible:
            asked = request.params.get("instance_ids") or []
            return request, (f"none of the alerts' instances ({', '.join(asked) or 'none named'}) carry every tag of "
                             f"{entry.id}'s selector")
        params = {"instance_ids": eligible}
    return request.model_copy(update={"params": params}), None


def host_for(selector: str, labels: dict[str, str]) -> str:
    """The concrete host a request names: the selector itself, or the alert's host label.

    The policy checks the result against the selector, so an odd label cannot widen it.
    """
    if not GLOB_CHARS & set(selector):
        return selector
    host = labels.get("host") or labels.get("instance", "").rsplit(":", 1)[0]
    return host if fnmatchcase(host, selector) else ""


def build_request(entry, alerts: list[Alert], diagnosis: Diagnosis) -> ActionRequest:
    target = target_of(entry)
    if entry.kind == "systemd.restart":
        labels = next((a.labels for a in alerts if a.status == "firing"), alerts[0].labels)
        target["host"] = host_for(target["host"], labels)
    return ActionRequest(entry_id=entry.id, target=target, params=diagnosis.params)
