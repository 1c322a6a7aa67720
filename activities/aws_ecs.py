"""``ecs.rollback``: point a service at its pinned known-good task definition.

No-op if it already runs that revision. Verified when the deployment reaches steady
state: the service names the pinned revision, and its PRIMARY deployment has completed
its rollout with every desired task running. (On the local simulation, moto keeps the
service's first deployment after an update; the check reads its rollout state.)
"""

from __future__ import annotations

from selfheal.activities.aws_clients import AwsClients
from selfheal.contract import Check, RemediationInput, WorldState
from selfheal.whitelist.models import EcsRollbackEntry


def revision(task_definition: str | None) -> str:
    """``family:revision`` of a task definition given as either that or its ARN."""
    return (task_definition or "").rsplit("/", 1)[-1]


async def read(clients: AwsClients, entry: EcsRollbackEntry) -> WorldState:
    t = entry.target
    found = await clients.call("ecs", t.region, "describe_services", cluster=t.cluster, services=[t.service])
    services = found.get("services") or []
    if not services:
        failure = (found.get("failures") or [{}])[0]
        return WorldState(resource=f"ecs:{t.cluster}/{t.service}", facts={"missing": failure.get("reason", "not found")})
    service = services[0]
    primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    return WorldState(resource=f"ecs:{t.cluster}/{t.service}", facts={
        "task_definition": revision(service.get("taskDefinition")),
        "status": service.get("status"),
        "desired_count": service.get("desiredCount", 0),
        "running_count": service.get("runningCount", 0),
        "deployments": len(service.get("deployments", [])),
        "primary_task_definition": revision(primary.get("taskDefinition")),
        "primary_rollout": primary.get("rolloutState"),
        "primary_running": primary.get("runningCount", 0),
        "primary_desired": primary.get("desiredCount", 0),
    })


async def act(clients: AwsClients, entry: EcsRollbackEntry, inp: RemediationInput, now: WorldState) -> tuple[str, str]:
    t = entry.target
    pinned = revision(t.task_definition)
    if "missing" in now.facts:
        raise LookupError(f"service {t.service} in cluster {t.cluster}: {now.facts['missing']}")
    current = now.facts.get("task_definition")
    if current == pinned:
        was = inp.baseline.facts.get("task_definition") if inp.baseline is not None else None
        if was == pinned:
            return "no_op", f"{t.service} already runs {pinned}; nothing to do"
        return "already_done", f"{t.service} was rolled back to {pinned} since the decision (from {was}); not again"
    await clients.call("ecs", t.region, "update_service", cluster=t.cluster, service=t.service, taskDefinition=t.task_definition)
    return "executed", f"pointed {t.cluster}/{t.service} at {pinned} (was {current})"


async def verify(clients: AwsClients, entry: EcsRollbackEntry) -> Check:
    pinned = revision(entry.target.task_definition)
    f = (await read(clients, entry)).facts
    steady = f.get("primary_rollout") in ("COMPLETED", None) and f.get("primary_running", 0) >= f.get("primary_desired", 0)
    ok = f.get("task_definition") == pinned and steady
    return Check(name=f"ecs {entry.target.service} steady on {pinned}", ok=ok,
                 detail=f"service on {f.get('task_definition')}; PRIMARY deployment {f.get('primary_rollout')}, "
                        f"{f.get('primary_running')}/{f.get('primary_desired')} running, "
                        f"naming {f.get('primary_task_definition')}; {f.get('deployments')} deployment(s)")
