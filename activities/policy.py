"""The policy as the workflow sees it: the loaded whitelist, and the execution ledger."""

from __future__ import annotations

import asyncio
import random

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from selfheal.activities.heartbeat import heartbeating
from selfheal.models import Execution
from selfheal.settings import IncidentSettings, PolicySnapshot
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.workflows.ledger import LedgerState, RemediationLedgerWorkflow, Reservation, ReservationResult, ledger_id


BUSY_BACKOFF_FIRST = 0.05  # seconds
BUSY_BACKOFF_MAX = 2.0
LEDGER_SLOTS = 8  # reservations in flight per entry from one worker; Temporal admits 10 per workflow


class PolicyActivities:
    def __init__(self, loaded: LoadedWhitelist, settings: IncidentSettings, client: Client, task_queue: str,
                 search_attributes: bool = False):
        self._search_attributes = search_attributes
        self._loaded = loaded
        self._settings = settings
        self._client = client
        self._task_queue = task_queue
        self._ledger_slots: dict[str, asyncio.Semaphore] = {}

    @activity.defn(name="load_policy")
    @heartbeating
    async def load_policy(self) -> PolicySnapshot:
        return PolicySnapshot(
            whitelist=self._loaded.whitelist, sha256=self._loaded.sha256, source=self._loaded.path, settings=self._settings,
            search_attributes=self._search_attributes,
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
        # Temporal admits 10 updates in flight per workflow and refuses the rest
        # (RESOURCE_EXHAUSTED, after the client's own retries of up to 10 s). Queueing here
        # first keeps one worker's burst of approvals under that limit; several workers
        # can still meet it, and then the loop below waits and tries again.
        slots = self._ledger_slots.setdefault(reservation.entry_id, asyncio.Semaphore(LEDGER_SLOTS))
        async with slots:
            delay = BUSY_BACKOFF_FIRST
            while True:
                try:
                    return await self._client.execute_update_with_start_workflow(
                        RemediationLedgerWorkflow.reserve, reservation, start_workflow_operation=self._ledger_start(reservation)
                    )
                except WorkflowUpdateFailedError as exc:
                    raise RuntimeError(f"ledger refused the reservation: {exc.cause}") from None
                except RPCError as exc:
                    # Busy, or the update was aborted (its workflow task raced another):
                    # neither decided anything, so the same reservation is sent again. Its
                    # idempotency key makes a retry of one that did land the same execution.
                    if exc.status not in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
                        raise
                    activity.logger.info("ledger of %s is busy (%s); retrying in %.2fs", reservation.entry_id, exc.message, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, BUSY_BACKOFF_MAX)

    def _ledger_start(self, reservation: Reservation) -> WithStartWorkflowOperation:
        # A fresh operation per call: the SDK refuses to reuse one.
        return WithStartWorkflowOperation(
            RemediationLedgerWorkflow.run,
            LedgerState(entry_id=reservation.entry_id),
            id=ledger_id(self._task_queue, reservation.entry_id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
