"""Hand alerts to Temporal: one incident per alert episode, one call per incident per batch.

The incident id (the workflow id) is ``<key>~<episode>``: the key names the alert across
its episodes, the episode names the instant this one began (``parsers``). Firing alerts
are delivered with signal-with-start under ``WorkflowIDReusePolicy.REJECT_DUPLICATE``:

- no incident for the episode yet: it starts;
- the episode's incident is running: it gets the ``alerts`` signal;
- the episode's incident has ended, whatever its outcome: Temporal refuses the start,
  which proves it already had the episode, and the answer is ``duplicate``. A re-send
  never opens a second incident; a resolved-then-firing alert has a new start, so it is a
  new episode and a new incident.

Temporal remembers a closed run for the namespace's retention period, so that is how
long the guarantee holds (``selfheal dev`` sets 30 days).

A message that cannot name its episode (an SNS ``OK``, a generic alert without
``starts_at``, an Alertmanager group) goes to the key's running incident, found by a
visibility query on the id prefix. With none running, a firing one starts the episode
its earliest ``starts_at`` names, and a resolved one is acknowledged with nothing to do.

Concurrent posts for one incident are coalesced: while a call for it is in flight,
later alerts wait in the next batch, which goes out as one call when the first returns,
and every request waiting on a batch gets that call's outcome. Alerts this process has
already delivered to an incident are not sent again (``already delivered``), nor is
anything for an episode Temporal has told it ended (``duplicate``): a storm of re-sends
costs Temporal nothing and does not grow the incident's history.

Every request is bounded by ``deadline`` from its arrival, and so is every call: when
Temporal is gone the sender hears 503 quickly and retries; the retry is safe because
delivery is idempotent per episode.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from selfheal import search
from selfheal.contract import Alert, AlertBatch, IncidentInput
from selfheal.contract.workflows import INCIDENT_WORKFLOW, Incident
from selfheal.ingress.parsers import episode_of

DEADLINE = timedelta(seconds=5)
REMEMBERED = 20_000  # entries per memory (alerts delivered, open and ended incidents): a storm's working set
_SIGNAL_LIMIT = "limit for signal"  # Temporal's INVALID_ARGUMENT text for maximumSignalsPerExecution


class TemporalUnavailable(Exception):
    """Temporal did not take the alerts; the sender must retry."""


class TemporalRefused(Exception):
    """Temporal refused the alerts as invalid; a retry cannot help (a 4xx, not a 503)."""


def incident_id(key: str, episode: str) -> str:
    return f"{key}~{episode}"


@dataclass
class _Batch:
    alerts: list[Alert] = field(default_factory=list)
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class Delivered:
    id: str      # the incident that has the alerts, or the key when there is none
    alerts: int
    # "delivered"          Temporal has them now (a new incident, or a signal to the running one)
    # "already delivered"  this ingress gave these very alerts to the incident before
    # "duplicate"          the episode's incident has ended; nothing new starts
    # "no open incident"   resolved alerts with nothing to resolve
    # "saturated"          the running incident took Temporal's per-execution signal limit
    state: str


class Delivery:
    def __init__(self, client: Client, task_queue: str, search_attributes: bool = False,
                 deadline: timedelta = DEADLINE, remembered: int = REMEMBERED):
        self._client = client
        self._task_queue = task_queue
        self._search_attributes = search_attributes
        self._deadline = deadline.total_seconds()
        self._pending: dict[tuple[str, str | None], _Batch] = {}
        self._flushing: set[tuple[str, str | None]] = set()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        # The incident this process last gave a key's firing alerts to: the first place a
        # message without an episode looks, before the (eventually consistent) visibility query.
        self._open: OrderedDict[str, str] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()  # incidents whose episode has ended
        self._remembered = remembered
        self.calls = 0  # Temporal calls made, for benchmarks and tests of coalescing

    async def deliver(self, key: str, episode: str | None, alerts: list[Alert]) -> Delivered:
        slot = (key, episode)
        batch = self._pending.get(slot)
        if batch is None:
            batch = self._pending[slot] = _Batch()
        batch.alerts.extend(alerts)
        if slot not in self._flushing:
            self._flushing.add(slot)
            asyncio.ensure_future(self._flush(slot))
        # Shielded: a client that disconnects must not cancel the call others wait on. The
        # deadline is the request's own: one that waited behind a slow call still answers
        # 503 within it (the batch it joined goes on, and the sender's retry finds it done).
        try:
            return await asyncio.wait_for(asyncio.shield(batch.done), self._deadline)
        except TimeoutError:
            raise TemporalUnavailable(f"Temporal did not take the alerts within {self._deadline:g}s") from None

    async def _flush(self, slot: tuple[str, str | None]) -> None:
        try:
            while (batch := self._pending.pop(slot, None)) is not None:
                try:
                    async with asyncio.timeout(self._deadline):
                        delivered = await self._send(*slot, batch.alerts)
                    batch.done.set_result(delivered)
                except TemporalRefused as exc:
                    batch.done.set_exception(exc)
                except TimeoutError:
                    batch.done.set_exception(TemporalUnavailable(f"Temporal did not answer within {self._deadline:g}s"))
                except Exception as exc:  # every waiter learns why, and answers 503
                    batch.done.set_exception(exc if isinstance(exc, TemporalUnavailable) else TemporalUnavailable(_reason(exc)))
        finally:
            self._flushing.discard(slot)

    async def _send(self, key: str, episode: str | None, alerts: list[Alert]) -> Delivered:
        if episode is not None:
            return await self._to_episode(key, incident_id(key, episode), alerts)
        delivered = await self._to_running(key, self._open.get(key), alerts)
        delivered = delivered or await self._to_running(key, await self._running(key), alerts)
        if delivered is not None:
            return delivered
        firing = [a for a in alerts if a.status == "firing"]
        if not firing:
            return Delivered(key, len(alerts), "no open incident")
        earliest = min(a.starts_at for a in firing)
        return await self._to_episode(key, incident_id(key, episode_of(earliest)), alerts)

    async def _to_running(self, key: str, wid: str | None, alerts: list[Alert]) -> Delivered | None:
        """Signal ``wid`` if it is still running; None if there is nothing to signal."""
        if wid is None:
            return None
        delivered = await self._to_episode(key, wid, alerts, start=False)
        return None if delivered.state == "no open incident" else delivered

    async def _to_episode(self, key: str, wid: str, alerts: list[Alert], start: bool = True) -> Delivered:
        if wid in self._ended:
            # Temporal refused this episode's start before: it ended, and nothing can join it.
            return Delivered(wid, len(alerts), "duplicate")
        digests = [_digest(a) for a in alerts]
        fresh = [a for a, d in zip(alerts, digests) if (wid, d) not in self._seen]
        if not fresh:
            return Delivered(wid, len(alerts), "already delivered")
        firing = next((a for a in fresh if a.status == "firing"), None)
        self.calls += 1
        try:
            if firing is not None and start:
                await self._signal_with_start(wid, fresh, firing)
            else:
                await self._client.get_workflow_handle(wid).signal(Incident.ALERTS, AlertBatch(alerts=fresh))
        except WorkflowAlreadyStartedError:
            self._ended[wid] = None  # a later post for the episode costs nothing
            _bound(self._ended, self._remembered)
            return Delivered(wid, len(alerts), "duplicate")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return Delivered(wid, len(alerts), "no open incident")
            if exc.status == RPCStatusCode.INVALID_ARGUMENT and _SIGNAL_LIMIT in exc.message:
                # The incident runs and has taken all the messages Temporal allows one run;
                # what is refused here is a re-send or a later alert of the same episode.
                return Delivered(wid, len(alerts), "saturated")
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise TemporalRefused(f"Temporal refused the alerts for {wid}: {exc.message}") from None
            raise
        self._remember(wid, digests)
        if firing is not None:
            self._open[key] = wid
            self._open.move_to_end(key)
            _bound(self._open, self._remembered)
        return Delivered(wid, len(alerts), "delivered")

    async def _signal_with_start(self, wid: str, alerts: list[Alert], firing: Alert) -> None:
        attributes = search.at_start(firing.labels) if self._search_attributes else None
        await self._client.start_workflow(
            INCIDENT_WORKFLOW,
            IncidentInput(alerts=alerts),
            id=wid,
            task_queue=self._task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            start_signal=Incident.ALERTS,
            start_signal_args=[AlertBatch(alerts=alerts)],
            search_attributes=attributes,
            static_summary=search.summary_of(firing.labels, firing.annotations),
            static_details=search.details_of(alerts),  # set once, at start; the story is the current details
        )

    async def _running(self, key: str) -> str | None:
        """The key's newest running incident, if any (keys are ``parsers.safe``: no quoting needed)."""
        # Drills share the key's id prefix (they look like incidents) but take no alerts.
        query = f'WorkflowId STARTS_WITH "{key}~" AND ExecutionStatus = "Running" AND WorkflowType = "{INCIDENT_WORKFLOW}"'
        newest = None
        async for execution in self._client.list_workflows(query, limit=10):
            if newest is None or execution.start_time > newest.start_time:
                newest = execution
        return newest.id if newest else None

    def _remember(self, wid: str, digests: list[str]) -> None:
        for d in digests:
            self._seen[(wid, d)] = None
            self._seen.move_to_end((wid, d))
        _bound(self._seen, self._remembered)


def _bound(lru: OrderedDict, size: int) -> None:
    while len(lru) > size:
        lru.popitem(last=False)


def _digest(alert: Alert) -> str:
    return hashlib.sha256(alert.model_dump_json().encode()).hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RPCError):
        return f"Temporal refused or did not answer: {exc.status.name if exc.status else 'error'}: {exc.message}"
    return f"Temporal unavailable: {type(exc).__name__}: {exc}"
