"""Did the symptom clear? Read-only checks, polled until they pass or time runs out."""

from __future__ import annotations

import asyncio
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import SystemdError, unit_state
from selfheal.contract import Check, UnitState, Verification, VerifyInput
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.contract.kinds import KINDS
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import AsgScaleEntry, Ec2RebootEntry, EcsRollbackEntry, SystemdRestartEntry

POLL_EVERY = 0.5
AWS_POLL_EVERY = 3.0  # AWS APIs throttle; a deployment settles in minutes, not milliseconds
AWS_CHECKS = tuple(name for name, kind in KINDS.items() if kind.aws)  # each AWS kind has its check


class Verifier:
    def __init__(self, runner: CommandRunner, http: httpx.AsyncClient, loaded: LoadedWhitelist, aws=None):
        self._runner = runner
        self._http = http
        self._loaded = loaded
        self._aws = aws  # AwsClients, for the AWS kinds' own checks

    @implements(declared.verify_remediation)
    @heartbeating
    async def verify_remediation(self, inp: VerifyInput) -> Verification:
        entry = self._loaded.whitelist.entry(inp.request.entry_id)
        if entry is None:
            return Verification(ok=False, checks=[Check(name="entry", ok=False, detail=f"no entry {inp.request.entry_id!r}")])
        deadline = time.monotonic() + inp.timeout_seconds
        checks: list[Check] = []
        if isinstance(entry, SystemdRestartEntry):
            checks.append(await self._poll(deadline, lambda: self._unit_running(entry, inp.request.target["host"])))
        elif self._aws is not None and entry.kind in AWS_CHECKS:
            checks.append(await self._poll(deadline, lambda: self._aws_check(entry, inp.request.params), AWS_POLL_EVERY))
        if entry.verify.http:
            checks.append(await self._poll(deadline, lambda: self._http_check(entry.verify.http.url, entry.verify.http.expect_status)))
        if not checks:
            checks.append(Check(name="kind", ok=False, detail=f"no verifier for {entry.kind} on this worker"))
        return Verification(ok=all(c.ok for c in checks), checks=checks)

    async def _poll(self, deadline: float, probe, every: float = POLL_EVERY) -> Check:
        while True:
            check = await probe()
            if check.ok or time.monotonic() >= deadline:
                return check
            activity.heartbeat(check.detail)
            await asyncio.sleep(every)

    async def _unit_running(self, entry: SystemdRestartEntry, host: str) -> Check:
        name = f"unit {entry.target.unit} active"
        try:
            state: UnitState = await unit_state(self._runner, host, entry.target.scope, entry.target.unit)
        except SystemdError as exc:
            return Check(name=name, ok=False, detail=str(exc))
        ok = state.active_state == "active" and state.sub_state == "running"
        return Check(name=name, ok=ok, detail=f"{state.active_state}/{state.sub_state}, invocation {state.invocation_id}")

    async def _aws_check(self, entry, params) -> Check:
        from selfheal.activities import aws_asg, aws_ec2, aws_ecs, aws_lambda

        try:
            if isinstance(entry, EcsRollbackEntry):
                return await aws_ecs.verify(self._aws, entry)
            if isinstance(entry, AsgScaleEntry):
                return await aws_asg.verify(self._aws, entry, params["desired_capacity"])
            if isinstance(entry, Ec2RebootEntry):
                return await aws_ec2.verify(self._aws, entry, list(params["instance_ids"]))
            return await aws_lambda.verify(self._aws, entry)
        except ApplicationError as exc:  # AWS said no or is unreachable: this poll failed, the next may pass
            return Check(name=f"{entry.kind} {entry.id}", ok=False, detail=str(exc))

    async def _http_check(self, url: str, expect: int) -> Check:
        name = f"GET {url}"
        try:
            response = await self._http.get(url, timeout=5.0)
        except httpx.HTTPError as exc:
            return Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}")
        return Check(name=name, ok=response.status_code == expect, detail=f"answered {response.status_code}, expected {expect}")
