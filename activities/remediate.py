"""Remediation executors: the only code that changes the world.

Each executor re-checks the request against the whitelist the worker loaded (the entry,
its target, its bounds) before acting; anything out of policy is a non-retryable
``OutOfPolicy`` error. Each is idempotent: it compares the world with the baseline the
workflow read when it decided to act, and if the action already happened (an earlier
attempt that crashed after acting, or anyone else), it reports that instead of acting
again. A retried or replayed remediation therefore has the effect of one.
"""

from __future__ import annotations

import asyncio
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import as_activity_errors, systemctl, unit_state
from selfheal.contract import RemediationInput, RemediationResult, UnitState
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry
from selfheal.whitelist.policy import check_request

TRANSITIONAL = frozenset({"activating", "deactivating", "reloading"})
SETTLE_WITHIN = 60.0  # seconds; a unit still in transition after this is restarted anyway
SETTLE_POLL = 0.5


def out_of_policy(message: str) -> ApplicationError:
    return ApplicationError(message, type="OutOfPolicy", non_retryable=True)


class SystemdRemediator:
    def __init__(self, runner: CommandRunner, loaded: LoadedWhitelist, brake=None):
        self._runner = runner
        self._loaded = loaded
        self._brake = brake  # activities.governor.BrakeReader; None in tests about the executor alone

    def _entry(self, inp: RemediationInput) -> SystemdRestartEntry:
        entry = self._loaded.whitelist.entry(inp.request.entry_id)
        if not isinstance(entry, SystemdRestartEntry):
            raise out_of_policy(f"entry {inp.request.entry_id!r} is not a systemd.restart entry of this worker's whitelist")
        if entry.mode == "shadow":
            raise out_of_policy(f"entry {entry.id!r} is in shadow mode: it is decided, never executed")
        refusal = check_request(entry, inp.request)
        if refusal:
            raise out_of_policy(f"[{refusal[0]}] {refusal[1]}")
        if inp.whitelist_sha256 != self._loaded.sha256:
            # The entry still allows exactly this request under the worker's whitelist, so act;
            # the audit records both hashes through the result's detail.
            activity.logger.warning("whitelist changed since the decision: %s -> %s", inp.whitelist_sha256, self._loaded.sha256)
        return entry

    @implements(declared.restart_unit)
    @heartbeating
    async def restart_unit(self, inp: RemediationInput) -> RemediationResult:
        entry = self._entry(inp)
        host, unit, scope = inp.request.target["host"], entry.target.unit, entry.target.scope
        if inp.baseline is None:
            raise out_of_policy("restart_unit needs the unit's baseline state to stay idempotent")
        with as_activity_errors():
            before = await self._settled(host, scope, unit)
            if before.invocation_id != inp.baseline.invocation_id:
                return self._result(inp, "already_done", before, before,
                                    f"{unit} on {host} already restarted since the request "
                                    f"(invocation {inp.baseline.invocation_id or '-'} -> {before.invocation_id or '-'}); not restarting again")
            if self._brake is not None:
                await self._brake.check(inp)
            activity.logger.info("restarting %s on %s (key %s)", unit, host, inp.idempotency_key)
            result = await self._runner.run(host, systemctl(scope, "restart", unit), timeout=600, privileged=True)
            after = await unit_state(self._runner, host, scope, unit)
        if not result.ok and after.invocation_id == inp.baseline.invocation_id:
            raise ApplicationError(f"systemctl restart {unit} failed ({result.returncode}): {result.stderr.strip()}", type="SystemdError")
        detail = f"restarted {unit} on {host}: invocation {before.invocation_id or '-'} -> {after.invocation_id or '-'}"
        if not result.ok:
            detail += f"; systemctl reported {result.returncode}: {result.stderr.strip()}"
        if inp.whitelist_sha256 != self._loaded.sha256:
            detail += f"; re-checked against whitelist {self._loaded.sha256[:12]}"
        return self._result(inp, "executed", before, after, detail)

    async def _settled(self, host: str, scope, unit: str) -> UnitState:
        """The unit's state once no job is changing it, waiting up to ``SETTLE_WITHIN``.

        An earlier attempt of this same remediation may still be running (its worker was
        presumed dead after a late heartbeat, but was not); its restart shows as a unit in
        transition. Waiting for it lets the InvocationID comparison see its result instead
        of restarting a second time.
        """
        deadline = time.monotonic() + SETTLE_WITHIN
        state = await unit_state(self._runner, host, scope, unit)
        if activity.info().attempt == 1:
            return state  # no earlier attempt exists: anything in transition is someone else's doing
        while state.active_state in TRANSITIONAL and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL)
            state = await unit_state(self._runner, host, scope, unit)
        return state

    @staticmethod
    def _result(inp: RemediationInput, action, before: UnitState, after: UnitState, detail: str) -> RemediationResult:
        return RemediationResult(
            entry_id=inp.request.entry_id, kind="systemd.restart", idempotency_key=inp.idempotency_key,
            action=action, detail=detail, before=before, after=after,
        )
