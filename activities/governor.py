"""The governor as incidents reach it: decide, reserve and report through its updates.

Workflows cannot send updates, so these activities do, with update-with-start: the first
caller starts the governor. They carry the incident's own whitelist snapshot (the one in
its history), so the decision is the one its audit names; the reservation right before
acting carries the worker's current whitelist instead (it may have been reloaded).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from selfheal.activities.heartbeat import heartbeating
from selfheal.models import Decision
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.workflows.governor import (
    Assess, Configure, GovernorState, GovernorWorkflow, Outcome, Reserve, Reserved, governor_id,
)

BUSY_BACKOFF_FIRST = 0.05  # seconds
BUSY_BACKOFF_MAX = 2.0
SLOTS = 8  # updates in flight to one workflow from one worker; Temporal admits 10


class Updater:
    """Update-with-start on one long-lived workflow, patient with a busy one.

    Temporal admits 10 updates in flight per workflow and refuses the rest
    (RESOURCE_EXHAUSTED, after the client's own retries), or aborts one whose workflow
    task raced another (UNAVAILABLE). Neither decided anything, so the same update is sent
    again with jittered backoff, until the activity's own timeout; heartbeats keep the
    activity alive meanwhile. Queueing first keeps one worker's burst under the limit.
    """

    def __init__(self, client: Client, task_queue: str):
        self._client = client
        self._task_queue = task_queue
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def update(self, wid: str, run, initial: Any, update, arg: Any) -> Any:
        async with self._slots.setdefault(wid, asyncio.Semaphore(SLOTS)):
            delay = BUSY_BACKOFF_FIRST
            while True:
                # A fresh operation per call: the SDK refuses to reuse one.
                start = WithStartWorkflowOperation(run, initial, id=wid, task_queue=self._task_queue,
                                                   id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
                try:
                    return await self._client.execute_update_with_start_workflow(update, arg, start_workflow_operation=start)
                except RPCError as exc:
                    if exc.status not in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
                        raise
                    activity.logger.info("%s is busy (%s); retrying in %.2fs", wid, exc.message, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, BUSY_BACKOFF_MAX)


class GovernorActivities:
    def __init__(self, loaded: LoadedWhitelist, client: Client, task_queue: str):
        self._loaded = loaded
        self._id = governor_id(task_queue)
        self._updater = Updater(client, task_queue)

    async def _call(self, update, arg):
        try:
            return await self._updater.update(self._id, GovernorWorkflow.run, GovernorState(), update, arg)
        except WorkflowUpdateFailedError as exc:
            raise RuntimeError(f"the governor refused: {exc.cause}") from None

    @activity.defn(name="assess_action")
    @heartbeating
    async def assess_action(self, inp: Assess) -> Decision:
        return await self._call(GovernorWorkflow.assess, inp)

    @activity.defn(name="reserve_action")
    @heartbeating
    async def reserve_action(self, inp: Reserve) -> Reserved:
        # Right before acting, decide again under the whitelist the worker holds now (it may
        # have been reloaded since the incident decided): an entry removed, a target or
        # bound narrowed, a tier raised, and nothing runs until people decide.
        if inp.whitelist_sha256 != self._loaded.sha256:
            activity.logger.warning("%s decided under whitelist %s; reserving under %s", inp.incident_id,
                                    inp.whitelist_sha256[:12], self._loaded.sha256[:12])
            inp = inp.model_copy(update={"whitelist": self._loaded.whitelist, "whitelist_sha256": self._loaded.sha256})
        return await self._call(GovernorWorkflow.reserve, inp)

    @activity.defn(name="record_outcome")
    @heartbeating
    async def record_outcome(self, outcome: Outcome) -> str:
        return await self._call(GovernorWorkflow.record_outcome, outcome)


async def configure_governor(client: Client, task_queue: str, loaded: LoadedWhitelist) -> None:
    """Tell the governor the worker's whitelist, so pause and resume can check people
    before any incident has run."""
    updater = Updater(client, task_queue)
    await updater.update(governor_id(task_queue), GovernorWorkflow.run, GovernorState(), GovernorWorkflow.configure,
                         Configure(whitelist=loaded.whitelist, whitelist_sha256=loaded.sha256))
