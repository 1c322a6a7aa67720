"""``ec2.reboot``: reboot the alerting instances that carry every tag of the selector.

The instances come from the firing alerts' instance ids, filtered by reading their tags
(``read``): never more than ``max_instances`` (the policy's bound), never one without the
selector's tags (re-read before acting). Each instance is tagged with a hash of the
incident step's idempotency key *before* it is rebooted, and a tagged instance is
skipped: so one incident step reboots an instance at most once, even when the worker is
killed between the tag and the reboot (the price: that instance is then not rebooted, and
verification and people see it). Verified by the instances' status checks.
"""

from __future__ import annotations

import hashlib

from selfheal.activities.aws_clients import AwsClients
from selfheal.contract import Check, RemediationInput, WorldState
from selfheal.whitelist.models import Ec2RebootEntry
from selfheal.contract.kinds import INSTANCE_ID, MAX_CANDIDATES

REBOOT_TAG = "selfheal:reboot"


def step_tag(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


async def _describe(clients: AwsClients, region: str, ids: list[str]) -> dict[str, dict]:
    if not ids:
        return {}
    # Filter by id rather than InstanceIds=: an unknown id then reads as missing instead of
    # failing the whole call.
    found = await clients.call("ec2", region, "describe_instances", Filters=[{"Name": "instance-id", "Values": ids}])
    return {i["InstanceId"]: i for r in found.get("Reservations", []) for i in r.get("Instances", [])}


def _tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


async def read(clients: AwsClients, entry: Ec2RebootEntry, candidates: list[str]) -> WorldState:
    t = entry.target
    candidates = [i for i in candidates if INSTANCE_ID.fullmatch(i)][:MAX_CANDIDATES]
    instances = await _describe(clients, t.region, candidates)
    eligible, other, missing = [], [], []
    for iid in candidates:
        inst = instances.get(iid)
        if inst is None:
            missing.append(iid)
        elif all(_tags(inst).get(k) == v for k, v in t.tags.items()):
            eligible.append(iid)
        else:
            other.append(iid)
    return WorldState(resource="ec2:" + ",".join(f"{k}={v}" for k, v in sorted(t.tags.items())), facts={
        "eligible": sorted(eligible), "without_tags": sorted(other), "not_found": sorted(missing),
        "states": [f"{i}={instances[i]['State']['Name']}" for i in sorted(instances)],
    })


async def act(clients: AwsClients, entry: Ec2RebootEntry, inp: RemediationInput, now: WorldState) -> tuple[str, str]:
    t = entry.target
    wanted = list(inp.request.params["instance_ids"])
    instances = await _describe(clients, t.region, wanted)
    stray = [i for i in wanted if i not in instances or not all(_tags(instances[i]).get(k) == v for k, v in t.tags.items())]
    if stray:
        raise PermissionError(f"{', '.join(stray)} no longer carry every tag of the selector (or are gone); rebooted none")
    mark = step_tag(inp.idempotency_key)
    done = [i for i in wanted if _tags(instances[i]).get(REBOOT_TAG) == mark]
    todo = [i for i in wanted if i not in done]
    for iid in todo:  # one at a time: the tag on each is the record that its reboot was sent
        await clients.call("ec2", t.region, "create_tags", Resources=[iid], Tags=[{"Key": REBOOT_TAG, "Value": mark}])
        await clients.call("ec2", t.region, "reboot_instances", InstanceIds=[iid])
    if not todo:
        return "already_done", f"{', '.join(done)} already rebooted by this incident step; not again"
    skipped = f"; already rebooted by this step: {', '.join(done)}" if done else ""
    return "executed", f"rebooted {', '.join(todo)}{skipped}"


async def verify(clients: AwsClients, entry: Ec2RebootEntry, ids: list[str]) -> Check:
    found = await clients.call("ec2", entry.target.region, "describe_instance_status", InstanceIds=ids, IncludeAllInstances=True)
    by_id = {s["InstanceId"]: s for s in found.get("InstanceStatuses", [])}
    bad, lines = [], []
    for iid in ids:
        s = by_id.get(iid, {})
        state = s.get("InstanceState", {}).get("Name")
        inst, system = s.get("InstanceStatus", {}).get("Status"), s.get("SystemStatus", {}).get("Status")
        lines.append(f"{iid} {state} instance={inst} system={system}")
        if (state, inst, system) != ("running", "ok", "ok"):
            bad.append(iid)
    return Check(name=f"ec2 status checks of {len(ids)} instance(s)", ok=not bad, detail="; ".join(lines))
