"""The policy as the workflow sees it: the loaded whitelist, and (for incidents that began
before the governor) the per-entry execution ledger."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from selfheal.activities.governor import Updater
from selfheal.activities.heartbeat import heartbeating
from selfheal.models import Execution
from selfheal.settings import IncidentSettings, PolicySnapshot
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.workflows.ledger import LedgerState, RemediationLedgerWorkflow, Reservation, ReservationResult, ledger_id


class PolicyActivities:
    def __init__(self, loaded: LoadedWhitelist, settings: IncidentSettings, client: Client, task_queue: str,
                 search_attributes: bool = False, evidence=None):
        self._search_attributes = search_attributes
        self._evidence = evidence  # EvidenceCatalog, when the worker has an evidence configuration
        self._loaded = loaded
        self._settings = settings
        self._client = client
        self._task_queue = task_queue
        self._updater = Updater(client, task_queue)

    @activity.defn(name="load_policy")
    @heartbeating
    async def load_policy(self) -> PolicySnapshot:
        return PolicySnapshot(
            whitelist=self._loaded.whitelist, sha256=self._loaded.sha256, source=self._loaded.path, settings=self._settings,
            search_attributes=self._search_attributes, evidence=self._evidence,
        )

    @activity.defn(name="read_executions")
    @heartbeating
    async def read_executions(self, entry_id: str) -> list[Execution]:
        handle = self._client.get_workflow_handle(ledger_id(self._task_queue, entry_id))
        try:
            return await handle.query(RemediationLedgerWorkflow.executions)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return []  # the entry has never run
            raise

    @activity.defn(name="reserve_execution")
    @heartbeating
    async def reserve_execution(self, reservation: Reservation) -> ReservationResult:
        # The per-entry ledger of incidents that began before the governor (their
        # histories still call this); new incidents reserve on the governor.
        try:
            return await self._updater.update(
                ledger_id(self._task_queue, reservation.entry_id), RemediationLedgerWorkflow.run,
                LedgerState(entry_id=reservation.entry_id), RemediationLedgerWorkflow.reserve, reservation,
            )
        except WorkflowUpdateFailedError as exc:
            raise RuntimeError(f"ledger refused the reservation: {exc.cause}") from None
