"""Read-only looks at the world that the workflow records before it acts."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import as_activity_errors, unit_state
from selfheal.contract import ActionRequest, UnitState
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry


class EvidenceReader:
    def __init__(self, runner: CommandRunner, loaded: LoadedWhitelist):
        self._runner = runner
        self._loaded = loaded

    @implements(declared.read_unit_state)
    @heartbeating
    async def read_unit_state(self, request: ActionRequest) -> UnitState:
        entry = self._loaded.whitelist.entry(request.entry_id)
        if not isinstance(entry, SystemdRestartEntry):
            raise ApplicationError(f"{request.entry_id!r} is not a systemd.restart entry", type="OutOfPolicy", non_retryable=True)
        with as_activity_errors():
            return await unit_state(self._runner, request.target["host"], entry.target.scope, entry.target.unit)
