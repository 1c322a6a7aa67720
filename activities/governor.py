"""The governors as incidents and workers reach them.

Workflows cannot send updates, so these activities do, with update-with-start: the first
caller starts a governor. An incident's decision carries its own snapshot's hash and
``Whitelist.for_entry`` of it (so the decision is the one its audit names, and its cost
does not grow with the whitelist); the reservation right before acting is decided under
the deployment's current whitelist, which the deployment governor owns (workers announce
theirs; ``announce_whitelist``). Each decision first reads the entry's brake (pauses, the
breaker) and the current whitelist's hash from the deployment governor's memo
(``read_brakes``: a describe, which adds nothing to any history and needs no worker); a
pause that lands between that read and the decision is caught by the executor's own brake
check (``BrakeReader``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from selfheal.activities.heartbeat import heartbeating, recall, remember
from selfheal.contract import RemediationInput
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.whitelist import Policy
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.contract.governor import (
    BRAKED, BREAKER, ENTRY_GOVERNOR_WORKFLOW, GOVERNOR_WORKFLOW, UNKNOWN_WHITELIST, Announce, Assess, Assessed, AssessInput,
    Brake, Brakes, Current, EntryGovernor, EntryState, EntryStatus, Governor, GovernorState, GovernorStatus, Learn, OpenBreaker,
    Outcome, Reserve, ReserveInput, Reserved, entry_governor_id, governor_id, governor_queue, reservation_key,
)

BUSY_BACKOFF_FIRST = 0.05  # seconds
BUSY_BACKOFF_MAX = 2.0
SLOTS = 4  # updates in flight to one workflow from one worker; Temporal admits 10


class Updater:
    """Update-with-start on a long-lived workflow, patient with a busy one.

    Temporal admits 10 updates in flight per workflow and refuses the rest
    (RESOURCE_EXHAUSTED, after the client's own retries), or aborts one whose workflow
    task raced another (UNAVAILABLE). Neither decided anything, so the same update is sent
    again with jittered backoff, until the activity's own timeout; heartbeats keep the
    activity alive meanwhile. Queueing first keeps one worker's burst under the limit.
    """

    def __init__(self, client: Client, task_queue: str):
        self._client = client
        self._task_queue = governor_queue(task_queue)  # a governor started here runs on the governors' queue
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def update(self, wid: str, workflow: str, initial: Any, update: str, arg: Any, result_type: type) -> Any:
        async with self._slots.setdefault(wid, asyncio.Semaphore(SLOTS)):
            delay = BUSY_BACKOFF_FIRST
            while True:
                # A fresh operation per call: the SDK refuses to reuse one.
                start = WithStartWorkflowOperation(workflow, initial, id=wid, task_queue=self._task_queue,
                                                   id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
                try:
                    return await self._client.execute_update_with_start_workflow(update, arg, start_workflow_operation=start,
                                                                                 id=update_id(), result_type=result_type)
                except RPCError as exc:
                    if exc.status not in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
                        raise
                    activity.logger.info("%s is busy (%s); retrying in %.2fs", wid, exc.message, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, BUSY_BACKOFF_MAX)


def update_id() -> str:
    """A fresh id for one update: 72 random bits, unique among the 2,000 a run admits.

    A governor's history holds an update's id four times (the SDK's default, a UUID, is 36
    characters): 12 here leave 96 bytes of every decision out of it. Each send gets its own
    id, as the SDK's would: the governor's answer to a resent request is what makes it safe
    (``Reserved``), not Temporal's deduplication of one id."""
    return secrets.token_urlsafe(9)


async def _query(client: Client, wid: str, query: str, result_type: type, arg: Any = None, default: Any = None,
                 timeout: timedelta | None = None) -> Any:
    """A governor's query, or ``default`` when that governor has not started yet."""
    try:
        handle = client.get_workflow_handle(wid)
        args = () if arg is None else (arg,)
        return await handle.query(query, *args, result_type=result_type, rpc_timeout=timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return default
        raise


async def read_memo(client: Client, task_queue: str, timeout: timedelta | None = None) -> Brakes | None:
    """The deployment governor's brakes and current whitelist hash, from its memo (``Brakes``):
    a describe the server answers, not a query a worker must (so it answers with no worker
    running, too). None when the governor runs without the memo (before its first workflow
    task completes, or one whose code wrote none): then the caller asks it with a query,
    and never reads a missing memo as "no brake". An absent governor raises NOT_FOUND."""
    described = await client.get_workflow_handle(governor_id(task_queue)).describe(rpc_timeout=timeout)
    return Brakes.from_memo(await described.memo())


async def read_brakes(client: Client, task_queue: str) -> Brakes | None:
    """``read_memo``, with an absent governor as no brakes at all (none was ever set)."""
    try:
        return await read_memo(client, task_queue)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return Brakes()
        raise


async def announce_whitelist(client: Client, task_queue: str, loaded: LoadedWhitelist) -> str:
    """Tell the deployment governor this worker's whitelist (at start, and on each reload).
    It adopts it unless the current one has a higher revision; the answer says which."""
    brakes = await read_brakes(client, task_queue)
    if brakes is not None and brakes.whitelist_sha256 == loaded.sha256:
        return f"whitelist {loaded.sha256[:12]} is current"
    return await Updater(client, task_queue).update(
        governor_id(task_queue), GOVERNOR_WORKFLOW, GovernorState(), Governor.ANNOUNCE,
        Announce(whitelist=loaded.whitelist, whitelist_sha256=loaded.sha256, source=loaded.path), str)


async def read_status(client: Client, task_queue: str, timeout: timedelta | None = None) -> GovernorStatus | None:
    """The deployment governor's status with each entry's ledger filled in from its own
    governor; None when no worker has started the governor yet. ``timeout`` bounds each
    query (a person waiting at a terminal)."""
    status: GovernorStatus | None = await _query(client, governor_id(task_queue), Governor.STATUS, GovernorStatus,
                                                 timeout=timeout)
    if status is None:
        return None
    limit = asyncio.Semaphore(16)

    async def ledger(entry_id: str):
        async with limit:
            return await _query(client, entry_governor_id(task_queue, entry_id), EntryGovernor.LEDGER, EntryStatus,
                                timeout=timeout)

    ledgers = await asyncio.gather(*(ledger(e.entry_id) for e in status.entries))
    entries = [e if got is None else got.model_copy(update={"paused": e.paused, "breaker": e.breaker})
               for e, got in zip(status.entries, ledgers)]
    return status.model_copy(update={"entries": entries})


class BrakeReader:
    """The executors' last look at the brake, right before they change anything.

    An automatic action starts executing when it passes this check: after ``selfheal
    pause`` returns, no automatic action passes it. A retried attempt of an action that
    already passed (remembered in its heartbeat details) finishes it, and stays idempotent.
    """

    def __init__(self, client: Client, task_queue: str):
        self._client = client
        self._task_queue = task_queue

    async def check(self, inp: RemediationInput) -> None:
        if not inp.autonomous or recall("brake") == "passed":
            return
        brakes = await read_brakes(self._client, self._task_queue)
        brake = brakes.brake(inp.request.entry_id) if brakes is not None else await _query(
            self._client, governor_id(self._task_queue), Governor.BRAKE, Brake, inp.request.entry_id, Brake())
        why = brake.engaged(datetime.now(timezone.utc))
        if why:
            raise ApplicationError(f"{inp.request.entry_id} did not run alone: {why}", type=BRAKED, non_retryable=True)
        remember("brake", "passed")


def _unless_derived(inp: AssessInput) -> str:
    """The reservation's key, left out when the governor can derive it (``Assess.key``)."""
    return "" if inp.idempotency_key == reservation_key(inp.incident_id, inp.request.entry_id) else inp.idempotency_key


class GovernorActivities:
    def __init__(self, loaded: LoadedWhitelist, client: Client, task_queue: str):
        self._loaded = loaded
        self._client = client
        self._task_queue = task_queue
        self._id = governor_id(task_queue)
        self._updater = Updater(client, task_queue)

    async def _current(self, entry_id: str) -> Current:
        brakes = await read_brakes(self._client, self._task_queue)
        if brakes is None or not brakes.whitelist_sha256:
            # No worker has announced a whitelist yet (this one's start-up announcement
            # may still be on its way): announce this worker's, then read again.
            await announce_whitelist(self._client, self._task_queue, self._loaded)
            brakes = await read_brakes(self._client, self._task_queue)
        # No await from here on: a reload (on this event loop) cannot change the file midway.
        if brakes is None or brakes.whitelist_sha256 != self._loaded.sha256:
            # Another worker's file is current (a rolling upgrade, a reload not here yet):
            # only the governor holds what deciding on the entry needs of it.
            return await _query(self._client, self._id, Governor.CURRENT, Current, entry_id, Current())
        return Current(whitelist_sha256=brakes.whitelist_sha256, revision=brakes.revision,
                       policy=self._loaded.whitelist.for_entry(entry_id), brake=brakes.brake(entry_id))

    async def _entry_update(self, entry_id: str, update: str, arg, result_type: type, policies: dict[str, Policy | None]):
        """``update`` on the entry's governor; taught one of ``policies`` (whitelist hash ->
        ``Whitelist.for_entry``) first whenever it names a hash it does not know."""
        wid = entry_governor_id(self._task_queue, entry_id)
        initial = EntryState(entry_id=entry_id, policies=policies)  # a governor started now knows them all
        for _ in range(2 * len(policies) + 1):
            try:
                return await self._updater.update(wid, ENTRY_GOVERNOR_WORKFLOW, initial, update, arg, result_type)
            except WorkflowUpdateFailedError as exc:
                cause = exc.cause
                unknown = cause.details[0] if isinstance(cause, ApplicationError) and cause.type == UNKNOWN_WHITELIST \
                    and cause.details else None
                if unknown not in policies:
                    raise RuntimeError(f"the governor of {entry_id} refused: {cause}") from None
                await self._updater.update(wid, ENTRY_GOVERNOR_WORKFLOW, initial, EntryGovernor.LEARN,
                                           Learn(whitelist_sha256=unknown, policy=policies[unknown]), str)
        raise RuntimeError(f"the governor of {entry_id} kept forgetting the whitelists it was taught")

    @implements(declared.assess_action)
    @heartbeating
    async def assess_action(self, inp: AssessInput) -> Assessed:
        # Decided under the incident's snapshot; an automatic decision is reserved at once
        # under the current whitelist, in the same update.
        entry_id = inp.request.entry_id
        current = await self._current(entry_id)
        assess = Assess(whitelist_sha256=inp.whitelist_sha256, request=inp.request, incident_id=inp.incident_id,
                        raised_by=inp.raised_by, brake=current.brake, reserve=bool(current.whitelist_sha256),
                        reserve_under="" if current.whitelist_sha256 == inp.whitelist_sha256 else current.whitelist_sha256,
                        idempotency_key=_unless_derived(inp))
        assessed = await self._entry_update(entry_id, EntryGovernor.ASSESS, assess, Assessed,
                                            {inp.whitelist_sha256: inp.policy, current.whitelist_sha256: current.policy})
        if assessed.reserved is not None:  # what the governor said once, the incident records in full
            assessed.reserved = assessed.reserved.in_full(inp.incident_id, entry_id, assessed.decision,
                                                          assess.reservation_sha256())
        return assessed

    @implements(declared.reserve_action)
    @heartbeating
    async def reserve_action(self, inp: ReserveInput) -> Reserved:
        # Right before acting, decide again under the deployment's current whitelist (it
        # may have been reloaded since the incident decided): an entry removed, a target or
        # bound narrowed, a tier raised, and nothing runs until people decide.
        entry_id = inp.request.entry_id
        current = await self._current(entry_id)
        if current.whitelist_sha256 != inp.whitelist_sha256:
            activity.logger.warning("%s decided under whitelist %s; reserving under the current %s", inp.incident_id,
                                    inp.whitelist_sha256[:12], current.whitelist_sha256[:12])
        reserve = Reserve(whitelist_sha256=current.whitelist_sha256, request=inp.request, incident_id=inp.incident_id,
                          raised_by=inp.raised_by, brake=current.brake, idempotency_key=_unless_derived(inp),
                          approved_by=inp.approved_by)
        reserved = await self._entry_update(entry_id, EntryGovernor.RESERVE, reserve, Reserved,
                                            {current.whitelist_sha256: current.policy})
        return reserved.in_full(inp.incident_id, entry_id, reserved.decision, reserve.whitelist_sha256)  # recorded in full

    @implements(declared.record_outcome)
    @heartbeating
    async def record_outcome(self, outcome: Outcome) -> str:
        current = await self._current(outcome.entry_id)
        outcome = outcome.model_copy(update={"whitelist_sha256": current.whitelist_sha256})
        answer = await self._entry_update(outcome.entry_id, EntryGovernor.RECORD_OUTCOME, outcome, str,
                                          {current.whitelist_sha256: current.policy})
        if answer.startswith(BREAKER):
            answer = await self._updater.update(self._id, GOVERNOR_WORKFLOW, GovernorState(), Governor.OPEN_BREAKER,
                                                OpenBreaker(entry_id=outcome.entry_id, reason=answer[len(BREAKER):]), str)
        return answer
