"""Hand alerts to Temporal: one signal-with-start per incident key per batch.

Concurrent posts for the same key are coalesced: while one call for a key is in
flight, later alerts for it wait in the next batch, which goes out as one call when the
first returns, and every request waiting on a batch gets that call's outcome. A storm
therefore costs Temporal one call per key per round trip, not one per alert, and no
request is answered before Temporal has its alerts.

A batch with a firing alert is delivered with signal-with-start: a running incident gets
the ``alerts`` signal, and a key whose incident has finished starts a new run, so a new
occurrence is never swallowed by an old incident. A batch of only resolved alerts is
just signalled: with no open incident there is nothing to resolve, and starting one
would be noise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from selfheal import search
from selfheal.models import Alert, AlertBatch, IncidentInput

RPC_TIMEOUT = timedelta(seconds=5)


class TemporalUnavailable(Exception):
    """Temporal did not take the alerts; the sender must retry."""


@dataclass
class _Batch:
    alerts: list[Alert] = field(default_factory=list)
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class Delivered:
    key: str
    alerts: int
    state: str  # "delivered", or "no open incident" for resolved alerts with nothing to resolve


class Delivery:
    def __init__(self, client: Client, task_queue: str, search_attributes: bool = False):
        self._client = client
        self._task_queue = task_queue
        self._search_attributes = search_attributes
        self._pending: dict[str, _Batch] = {}
        self._flushing: set[str] = set()
        self.calls = 0  # Temporal calls made, for benchmarks and tests of coalescing

    async def deliver(self, key: str, alerts: list[Alert]) -> Delivered:
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch()
        batch.alerts.extend(alerts)
        if key not in self._flushing:
            self._flushing.add(key)
            asyncio.ensure_future(self._flush(key))
        # Shielded: a client that disconnects must not cancel the call others wait on.
        return await asyncio.shield(batch.done)

    async def _flush(self, key: str) -> None:
        try:
            while (batch := self._pending.pop(key, None)) is not None:
                try:
                    state = await self._send(key, batch.alerts)
                    batch.done.set_result(Delivered(key, len(batch.alerts), state))
                except Exception as exc:  # every waiter learns why, and answers 503
                    batch.done.set_exception(exc if isinstance(exc, TemporalUnavailable) else TemporalUnavailable(_reason(exc)))
        finally:
            self._flushing.discard(key)

    async def _send(self, key: str, alerts: list[Alert]) -> str:
        self.calls += 1
        if not any(a.status == "firing" for a in alerts):
            try:
                await self._client.get_workflow_handle(key).signal("alerts", AlertBatch(alerts=alerts), rpc_timeout=RPC_TIMEOUT)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return "no open incident"
                raise
            return "delivered"
        firing = next(a for a in alerts if a.status == "firing")
        attributes = (
            TypedSearchAttributes([SearchAttributePair(search.SERVICE, search.service_of(firing.labels))])
            if self._search_attributes else None
        )
        await self._client.start_workflow(
            "IncidentWorkflow",
            IncidentInput(alerts=alerts),
            id=key,
            task_queue=self._task_queue,
            start_signal="alerts",
            start_signal_args=[AlertBatch(alerts=alerts)],
            search_attributes=attributes,
            static_summary=_summary(firing),
            rpc_timeout=RPC_TIMEOUT,
        )
        return "delivered"


def _summary(alert: Alert) -> str:
    name = alert.labels.get("alertname", "alert")
    where = alert.labels.get("service") or alert.labels.get("instance") or alert.labels.get("job") or ""
    text = alert.annotations.get("summary", "")
    return " ".join(part for part in (name, f"on {where}" if where else "", f"— {text}" if text else "") if part)[:200]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RPCError):
        return f"Temporal refused or did not answer: {exc.status.name if exc.status else 'error'}: {exc.message}"
    return f"Temporal unavailable: {type(exc).__name__}: {exc}"
