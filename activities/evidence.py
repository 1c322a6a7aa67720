"""Read-only looks at the world that the workflow records before it acts."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runner import CommandRunner, UnreachableHost
from activities.systemd import SystemdError, UnitNotFound, unit_state
from selfheal.models import ActionRequest, UnitState
from whitelist.loader import LoadedWhitelist
from whitelist.models import SystemdRestartEntry


class EvidenceReader:
    def __init__(self, runner: CommandRunner, loaded: LoadedWhitelist):
        self._runner = runner
        self._loaded = loaded

    @activity.defn(name="read_unit_state")
    async def read_unit_state(self, request: ActionRequest) -> UnitState:
        entry = self._loaded.whitelist.entry(request.entry_id)
        if not isinstance(entry, SystemdRestartEntry):
            raise ApplicationError(f"{request.entry_id!r} is not a systemd.restart entry", type="OutOfPolicy", non_retryable=True)
        try:
            return await unit_state(self._runner, request.target["host"], entry.target.scope, entry.target.unit)
        except UnreachableHost as exc:
            raise ApplicationError(str(exc), type="UnreachableHost", non_retryable=True) from None
        except UnitNotFound as exc:
            raise ApplicationError(str(exc), type="UnitNotFound", non_retryable=True) from None
        except SystemdError as exc:
            raise ApplicationError(str(exc), type="SystemdError") from None
