"""The AWS executors as activities: one per kind, so the history names what ran.

Each one re-checks entry, target and bounds against the whitelist this worker loaded,
checks that its credentials act in the entry's account, reads the world, acts only if it
is not already right, and reports the state before and after. Keyed on the incident step
(``RemediationInput.idempotency_key``), a retry or a replay after a SIGKILL has the effect
of one: the per-kind modules say how.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities import aws_asg, aws_ec2, aws_ecs, aws_lambda
from selfheal.activities.aws_clients import AwsClients
from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.remediate import out_of_policy
from selfheal.contract import ActionRequest, RemediationInput, RemediationResult, WorldState
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import AsgScaleEntry, Ec2RebootEntry, EcsRollbackEntry, LambdaRollbackEntry
from selfheal.whitelist.policy import check_request, check_target

MODULES = {"ecs.rollback": aws_ecs, "asg.scale": aws_asg, "ec2.reboot": aws_ec2, "lambda.rollback": aws_lambda}
ENTRY_TYPES = (EcsRollbackEntry, AsgScaleEntry, Ec2RebootEntry, LambdaRollbackEntry)


class AwsRemediator:
    def __init__(self, clients: AwsClients, loaded: LoadedWhitelist, brake=None):
        self._clients = clients
        self._loaded = loaded
        self._brake = brake  # activities.governor.BrakeReader; None in tests about the executors alone

    async def _entry(self, request: ActionRequest, kind: str | None, with_params: bool = True):
        entry = self._loaded.whitelist.entry(request.entry_id)
        if not isinstance(entry, ENTRY_TYPES) or (kind is not None and entry.kind != kind):
            raise out_of_policy(f"entry {request.entry_id!r} is not {kind or 'an AWS'} entry of this worker's whitelist")
        if entry.mode == "shadow" and with_params:  # reading the world is fine; acting is not
            raise out_of_policy(f"entry {entry.id!r} is in shadow mode: it is decided, never executed")
        refusal = check_request(entry, request) if with_params else check_target(entry, request.target)
        if refusal:
            raise out_of_policy(f"[{refusal[0]}] {refusal[1]}")
        if entry.target.region is None:
            raise out_of_policy(f"entry {entry.id!r} names no region")
        await self._clients.require_account(entry.target.region, entry.target.account)
        return entry

    async def _read(self, entry, request: ActionRequest) -> WorldState:
        if isinstance(entry, Ec2RebootEntry):
            ids = request.params.get("instance_ids")
            return await aws_ec2.read(self._clients, entry, ids if isinstance(ids, list) else [])
        return await MODULES[entry.kind].read(self._clients, entry)

    @implements(declared.read_world)
    @heartbeating
    async def read_world(self, request: ActionRequest) -> WorldState:
        """Read-only: the target as it is now (before deciding, and right before acting)."""
        entry = await self._entry(request, None, with_params=False)
        return await self._read(entry, request)

    async def _execute(self, inp: RemediationInput, kind: str) -> RemediationResult:
        entry = await self._entry(inp.request, kind)
        module = MODULES[kind]
        before = await self._read(entry, inp.request)
        if self._brake is not None:
            await self._brake.check(inp)
        try:
            action, detail = await module.act(self._clients, entry, inp, before)
        except LookupError as exc:
            raise ApplicationError(str(exc), type="NotFound", non_retryable=True) from None
        except PermissionError as exc:
            raise out_of_policy(str(exc)) from None
        after = await self._read(entry, inp.request) if action == "executed" else before
        if inp.whitelist_sha256 != self._loaded.sha256:
            detail += f"; re-checked against whitelist {self._loaded.sha256[:12]}"
        if self._clients.simulation:
            detail += f" [{self._clients.simulation}]"
        activity.logger.info("%s %s: %s (key %s)", kind, entry.id, detail, inp.idempotency_key)
        return RemediationResult(entry_id=entry.id, kind=kind, idempotency_key=inp.idempotency_key, action=action,
                                 detail=detail, before=before, after=after)

    @implements(declared.rollback_ecs_service)
    @heartbeating
    async def rollback_ecs_service(self, inp: RemediationInput) -> RemediationResult:
        return await self._execute(inp, "ecs.rollback")

    @implements(declared.scale_asg)
    @heartbeating
    async def scale_asg(self, inp: RemediationInput) -> RemediationResult:
        return await self._execute(inp, "asg.scale")

    @implements(declared.reboot_instances)
    @heartbeating
    async def reboot_instances(self, inp: RemediationInput) -> RemediationResult:
        return await self._execute(inp, "ec2.reboot")

    @implements(declared.rollback_lambda_alias)
    @heartbeating
    async def rollback_lambda_alias(self, inp: RemediationInput) -> RemediationResult:
        return await self._execute(inp, "lambda.rollback")

    def activities(self) -> list:
        return [self.read_world, self.rollback_ecs_service, self.scale_asg, self.reboot_instances, self.rollback_lambda_alias]
