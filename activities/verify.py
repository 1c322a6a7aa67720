"""Did the symptom clear? Read-only checks, polled until they pass or time runs out."""

from __future__ import annotations

import asyncio
import time

import httpx
from temporalio import activity

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import SystemdError, unit_state
from selfheal.models import Check, UnitState, Verification, VerifyInput
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry

POLL_EVERY = 0.5


class Verifier:
    def __init__(self, runner: CommandRunner, http: httpx.AsyncClient, loaded: LoadedWhitelist):
        self._runner = runner
        self._http = http
        self._loaded = loaded

    @activity.defn(name="verify_remediation")
    @heartbeating
    async def verify_remediation(self, inp: VerifyInput) -> Verification:
        entry = self._loaded.whitelist.entry(inp.request.entry_id)
        if entry is None:
            return Verification(ok=False, checks=[Check(name="entry", ok=False, detail=f"no entry {inp.request.entry_id!r}")])
        deadline = time.monotonic() + inp.timeout_seconds
        checks: list[Check] = []
        if isinstance(entry, SystemdRestartEntry):
            checks.append(await self._poll(deadline, lambda: self._unit_running(entry, inp.request.target["host"])))
        if entry.verify.http:
            checks.append(await self._poll(deadline, lambda: self._http_check(entry.verify.http.url, entry.verify.http.expect_status)))
        if not checks:
            checks.append(Check(name="kind", ok=False, detail=f"no verifier for {entry.kind} on this worker"))
        return Verification(ok=all(c.ok for c in checks), checks=checks)

    async def _poll(self, deadline: float, probe) -> Check:
        while True:
            check = await probe()
            if check.ok or time.monotonic() >= deadline:
                return check
            activity.heartbeat(check.detail)
            await asyncio.sleep(POLL_EVERY)

    async def _unit_running(self, entry: SystemdRestartEntry, host: str) -> Check:
        name = f"unit {entry.target.unit} active"
        try:
            state: UnitState = await unit_state(self._runner, host, entry.target.scope, entry.target.unit)
        except SystemdError as exc:
            return Check(name=name, ok=False, detail=str(exc))
        ok = state.active_state == "active" and state.sub_state == "running"
        return Check(name=name, ok=ok, detail=f"{state.active_state}/{state.sub_state}, invocation {state.invocation_id}")

    async def _http_check(self, url: str, expect: int) -> Check:
        name = f"GET {url}"
        try:
            response = await self._http.get(url, timeout=5.0)
        except httpx.HTTPError as exc:
            return Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}")
        return Check(name=name, ok=response.status_code == expect, detail=f"answered {response.status_code}, expected {expect}")
