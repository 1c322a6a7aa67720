"""Prometheus metrics (prometheus-client) for the worker and the ingress, each in its own registry.

Worker (``selfheal worker --metrics-address HOST:PORT``, at ``/metrics``):

- ``SdkMetrics``: the Temporal SDK's runtime records into a ``MetricBuffer``, drained every
  second into running totals: the SDK's own ``temporal_*`` metrics, and the ``selfheal_*``
  ones workflows record through ``workflow.metric_meter()`` (``selfheal.workflows.metrics``),
  which skips replays, so an incident rebuilt from its history is not counted again.
- ``GovernorCollector``: pause and breaker state, from the governor's status query at scrape
  time. A gauge set in workflow code would vanish with its worker (a replay records nothing).

Ingress (``/metrics`` on the app, no authentication): ``selfheal.ingress.metrics.IngressMetrics``.

Names are those of the SDK's own Prometheus exporter with ``counters_total_suffix``,
``unit_suffix`` and ``durations_as_seconds`` (compared with temporalio 1.35): counters end
``_total``, histograms in seconds ``_seconds``. Label values come from fixed vocabularies or
the whitelist, never from alert text.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER, BUFFERED_METRIC_KIND_GAUGE, BufferedMetricUpdate, MetricBuffer,
    MetricBufferDurationFormat, Runtime, TelemetryConfig,
)

log = logging.getLogger("selfheal.metrics")

# The SDK drops updates (and logs an error) once the buffer is full: drained every second,
# this is far more than a worker records in one.
BUFFER_SIZE = 100_000
DRAIN_EVERY = 1.0  # seconds
LABEL_CACHE = 10_000  # attribute sets whose labels are remembered
# Seconds to minutes: the SDK's latencies (polls, requests, tasks, activities).
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OTHER_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)  # not seconds: orders of magnitude
# Seconds to hours: a diagnosis takes seconds (minutes with a model); people answer in
# minutes to hours (the default approval window expires after 4 h).
BUCKETS = {
    "selfheal_decision_seconds": (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    "selfheal_approval_seconds": (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400),
}
_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL = re.compile(r"^(?=[0-9])|[^a-zA-Z0-9_]")


def _labels(attributes: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Attributes as label pairs: valid names, values as strings (booleans as the SDK writes them)."""
    return tuple(sorted((_LABEL.sub("_", k), str(v).lower() if isinstance(v, bool) else str(v))
                        for k, v in attributes.items()))


@dataclass
class _Family:
    name: str
    kind: str  # counter, gauge, histogram
    help: str
    buckets: tuple[float, ...] = ()
    # labels -> a counter's total, a gauge's value, or a histogram's [count per bucket..., +Inf, sum]
    series: dict[tuple[tuple[str, str], ...], Any] = field(default_factory=dict)


class SdkMetrics:
    """A Temporal ``Runtime`` whose metrics land in a prometheus-client registry.

    One per process (a runtime has threads of its own): pass ``runtime`` to ``Client.connect``
    and the workers on that client record here. ``run()`` drains every second until
    cancelled. One metric may carry different attribute sets (the SDK adds ``task_queue`` to
    some requests only), so this collects its own totals instead of fixed-label metrics.
    """

    def __init__(self, registry: CollectorRegistry | None = None, buffer_size: int = BUFFER_SIZE,
                 buckets: dict[str, Sequence[float]] | None = None) -> None:
        self.buffer = MetricBuffer(buffer_size, MetricBufferDurationFormat.SECONDS)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        self.registry = registry or new_registry()
        self._buckets = {**BUCKETS, **(buckets or {})}
        self._families: dict[str, _Family] = {}
        # The SDK hands out one attributes object per attribute set, again and again: its
        # label pairs are worked out once (per update they were 2.5% of the dev process's
        # CPU under load). The object is kept with them, so its id cannot be reused.
        self._label_cache: dict[int, tuple[Any, tuple[tuple[str, str], ...]]] = {}
        self._lock = threading.Lock()  # drained on the event loop, collected on the HTTP server's thread
        self.registry.register(self)

    def drain(self) -> int:
        updates = self.buffer.retrieve_updates()
        self.apply(updates)
        return len(updates)

    async def run(self, every: float = DRAIN_EVERY) -> None:
        try:
            while True:
                await asyncio.sleep(every)
                self.drain()
        finally:
            self.drain()  # what the last second recorded

    def apply(self, updates: Iterable[BufferedMetricUpdate]) -> None:
        with self._lock:
            for update in updates:
                family, labels, value = self._family(update), self._labels(update.attributes), update.value
                if family.kind == "counter":  # counters arrive as deltas
                    family.series[labels] = family.series.get(labels, 0) + value
                elif family.kind == "gauge":
                    family.series[labels] = value
                else:
                    hist = family.series.setdefault(labels, [0] * (len(family.buckets) + 2))
                    hist[bisect.bisect_left(family.buckets, value)] += 1
                    hist[-1] += value

    def _labels(self, attributes: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        cached = self._label_cache.get(id(attributes))
        if cached is not None and cached[0] is attributes:
            return cached[1]
        if len(self._label_cache) >= LABEL_CACHE:
            self._label_cache.clear()  # bounded, whatever the SDK does with its attribute sets
        labels = _labels(attributes)
        self._label_cache[id(attributes)] = (attributes, labels)
        return labels

    def _family(self, update: BufferedMetricUpdate) -> _Family:
        metric = update.metric
        if (family := self._families.get(metric.name)) is not None:
            return family
        name, buckets = _NAME.sub("_", metric.name), ()
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            kind, name = "counter", name.removesuffix("_total")
        elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
            kind = "gauge"
        else:
            # In seconds: the SDK's own durations, and any histogram created with unit "s"
            # (a custom timedelta histogram carries no unit of its own: give it "s").
            kind, seconds = "histogram", metric.unit == "s"
            name += "_seconds" if seconds and not name.endswith("_seconds") else ""
            buckets = tuple(sorted(self._buckets.get(name, LATENCY_BUCKETS if seconds else OTHER_BUCKETS)))
        family = self._families[metric.name] = _Family(name, kind, metric.description or "", buckets)
        return family

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # a consistent copy; the exposition is built outside the lock
            families = [(f, {k: list(v) if isinstance(v, list) else v for k, v in f.series.items()})
                        for f in self._families.values()]
        for family, series in families:
            metric = Metric(family.name, family.help, family.kind)
            for labels, value in sorted(series.items()):
                labels = dict(labels)
                if family.kind != "histogram":
                    metric.add_sample(family.name + ("_total" if family.kind == "counter" else ""), labels, value)
                    continue
                cumulative = 0
                for bound, count in zip((*family.buckets, float("inf")), value):
                    cumulative += count
                    metric.add_sample(f"{family.name}_bucket", {**labels, "le": floatToGoString(bound)}, cumulative)
                metric.add_sample(f"{family.name}_count", labels, cumulative)
                metric.add_sample(f"{family.name}_sum", labels, value[-1])
            yield metric


class GovernorCollector:
    """``selfheal_governor_up``, ``selfheal_paused``, ``selfheal_entry_paused{entry}`` and
    ``selfheal_breaker_open{entry}``, from the governor's status query at scrape time.

    The query runs on the worker's event loop, bounded by ``timeout`` and cached for ``ttl``,
    so frequent scrapes cost Temporal one query. When it fails (Temporal unreachable, no
    governor yet) the scrape still succeeds: ``selfheal_governor_up 0``, and no pause or
    breaker series, which are better absent than a made-up 0.
    """

    def __init__(self, read: Callable[[], Awaitable[Any]], loop: asyncio.AbstractEventLoop,
                 timeout: float = 2.0, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self._loop, self._timeout, self._ttl, self._clock = read, loop, timeout, ttl, clock
        self._cached: tuple[float, Any] | None = None
        self._lock = threading.Lock()

    def status(self) -> Any:
        """The governor's status, or None when it could not be read."""
        with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < self._ttl:
                return self._cached[1]
            status = self._query()
            if status is None and (self._cached is None or self._cached[1] is not None):
                log.warning("governor status unreadable: selfheal_governor_up is 0 until it answers")
            self._cached = (self._clock(), status)
            return status

    def _query(self) -> Any:
        try:
            asyncio.get_running_loop()
            return None  # blocking an event loop's own thread on it would deadlock
        except RuntimeError:
            pass
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(self._read(), self._timeout), self._loop)
        try:
            return future.result(self._timeout + 1)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Temporal did
            future.cancel()
            log.debug("governor status query failed: %s", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        yield GaugeMetricFamily("selfheal_governor_up", "1 when the governor's status query answered, else 0",
                                value=0 if status is None else 1)
        if status is None:
            return
        yield GaugeMetricFamily("selfheal_paused", "1 while autonomy is paused for every entry", value=int(bool(status.pause_all)))
        paused = GaugeMetricFamily("selfheal_entry_paused", "1 while the entry's autonomy is paused (by any pause)",
                                   labels=["entry"])
        breaker = GaugeMetricFamily("selfheal_breaker_open", "1 while the entry's circuit breaker is open", labels=["entry"])
        for entry in status.entries:
            paused.add_metric([entry.entry_id], int(bool(entry.paused)))
            breaker.add_metric([entry.entry_id], int(entry.breaker is not None))
        yield paused
        yield breaker


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) into (host, port); ValueError naming the value."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {address!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host.removeprefix("[").removesuffix("]"), int(port)


def serve(registry: CollectorRegistry, address: str):
    """Serve ``registry`` at http://ADDRESS/metrics on a thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # the port is taken, or the host is not this machine's
        raise ValueError(f"metrics address {address!r}: {exc.strerror or exc}") from None


def new_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_resident_memory_bytes and friends
    return registry


class WithoutCreated:
    """prometheus-client counters without their ``_created`` samples, like the worker's."""

    def __init__(self, *metrics: Counter) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
