"""``asg.scale``: set an Auto Scaling group's desired capacity, within reviewed bounds.

The workflow reads the current capacity itself (``read``); the diagnosis supplies only
the desired capacity, and the policy denies one outside [min, max] or beyond the max step
(never clamped). If the capacity moved between the decision and the act, nothing runs
and people decide. Verified by counting the group's InService instances.
"""

from __future__ import annotations

from selfheal.activities.aws_clients import AwsClients
from selfheal.contract import Check, RemediationInput, WorldState
from selfheal.whitelist.models import AsgScaleEntry


async def read(clients: AwsClients, entry: AsgScaleEntry) -> WorldState:
    t = entry.target
    found = await clients.call("autoscaling", t.region, "describe_auto_scaling_groups", AutoScalingGroupNames=[t.group])
    groups = found.get("AutoScalingGroups") or []
    if not groups:
        return WorldState(resource=f"asg:{t.group}", facts={"missing": f"no Auto Scaling group {t.group}"})
    g = groups[0]
    in_service = [i for i in g.get("Instances", []) if i.get("LifecycleState") == "InService"]
    return WorldState(resource=f"asg:{t.group}", facts={
        "desired_capacity": g["DesiredCapacity"], "min_size": g["MinSize"], "max_size": g["MaxSize"],
        "in_service": len(in_service),
    })


async def act(clients: AwsClients, entry: AsgScaleEntry, inp: RemediationInput, now: WorldState) -> tuple[str, str]:
    t = entry.target
    if "missing" in now.facts:
        raise LookupError(now.facts["missing"])
    desired, decided = inp.request.params["desired_capacity"], inp.request.params["current_capacity"]
    current = now.facts["desired_capacity"]
    if current == desired:
        if decided == desired or (inp.baseline is not None and inp.baseline.facts.get("desired_capacity") == desired):
            return "no_op", f"{t.group} already has desired capacity {desired}; nothing to do"
        return "already_done", f"{t.group} reached desired capacity {desired} since the decision (from {decided}); not again"
    if current != decided:
        return "world_changed", (f"{t.group}'s desired capacity is {current}, not the {decided} the decision read: "
                                 f"nothing was changed; people decide")
    await clients.call("autoscaling", t.region, "set_desired_capacity", AutoScalingGroupName=t.group,
                       DesiredCapacity=desired, HonorCooldown=False)
    return "executed", f"set {t.group} desired capacity {current} -> {desired}"


async def verify(clients: AwsClients, entry: AsgScaleEntry, desired: int) -> Check:
    f = (await read(clients, entry)).facts
    ok = f.get("desired_capacity") == desired and f.get("in_service") == desired
    return Check(name=f"asg {entry.target.group} InService = {desired}", ok=ok,
                 detail=f"desired {f.get('desired_capacity')}, {f.get('in_service')} InService")
