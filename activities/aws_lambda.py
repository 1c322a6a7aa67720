"""``lambda.rollback``: point an alias at its pinned version. Verified by reading the alias."""

from __future__ import annotations

from selfheal.activities.aws_clients import AwsClients
from selfheal.contract import Check, RemediationInput, WorldState
from selfheal.whitelist.models import LambdaRollbackEntry


async def read(clients: AwsClients, entry: LambdaRollbackEntry) -> WorldState:
    t = entry.target
    alias = await clients.call("lambda", t.region, "get_alias", FunctionName=t.function, Name=t.alias)
    return WorldState(resource=f"lambda:{t.function}:{t.alias}",
                      facts={"version": alias.get("FunctionVersion"), "revision_id": alias.get("RevisionId")})


async def act(clients: AwsClients, entry: LambdaRollbackEntry, inp: RemediationInput, now: WorldState) -> tuple[str, str]:
    t = entry.target
    current = now.facts.get("version")
    if current == t.version:
        was = inp.baseline.facts.get("version") if inp.baseline is not None else None
        if was == t.version:
            return "no_op", f"{t.function}:{t.alias} already points at version {t.version}; nothing to do"
        return "already_done", f"{t.function}:{t.alias} was pointed at {t.version} since the decision (from {was}); not again"
    # RevisionId: if anyone moved the alias since we read it, this update fails instead of
    # overwriting their change blindly; the retry reads again.
    await clients.call("lambda", t.region, "update_alias", FunctionName=t.function, Name=t.alias,
                       FunctionVersion=t.version, RevisionId=str(now.facts.get("revision_id")))
    return "executed", f"pointed {t.function}:{t.alias} at version {t.version} (was {current})"


async def verify(clients: AwsClients, entry: LambdaRollbackEntry) -> Check:
    t = entry.target
    version = (await read(clients, entry)).facts.get("version")
    return Check(name=f"lambda {t.function}:{t.alias} on version {t.version}", ok=version == t.version,
                 detail=f"alias points at version {version}")
