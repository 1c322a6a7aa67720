"""Test harness: a real Prometheus server on loopback, scraping a target the test controls.

Starts the ``prometheus`` binary (Debian package ``prometheus``, 2.42) with a generated
config that scrapes ONE target every second, a ``MetricsTarget``: a loopback HTTP server
serving ``/metrics`` in the Prometheus text format from counters the test sets and
increments. Queries go through Prometheus's own HTTP API, so PromQL parsing, string
escaping and range evaluation are Prometheus's, not a fake's.

Usage::

    def test_x():
        with MetricsTarget() as target, Prometheus(target.address) as prom:
            target.set("http_requests_total", {"service": "checkout", "code": "500"}, 42)
            target.grow("http_requests_total", {"service": "checkout", "code": "503"}, per_second=2.0)
            prom.wait_for_query('http_requests_total{service="checkout"}', series=2)
            prom.query("up")                         # the API's ``data``
    # or the fixture ``prometheus`` (module-scoped: one server, one target):
    def test_y(prometheus):
        prom, target = prometheus

API
---
``find_prometheus() -> (path | None, problem)``; ``$PROMETHEUS_BIN`` overrides.
``MetricsTarget()``: context manager; ``address`` (``127.0.0.1:PORT``), ``url``;
    ``set(name, labels, value)``, ``inc(name, labels, by=1)``, ``grow(name, labels,
    per_second)`` (a counter that rises with wall time from its value when called),
    ``scrapes`` (how many times /metrics was served).
``Prometheus(target_address, scrape_interval="1s", start_timeout=30, stop_timeout=10,
binary=None, jobs=None)``: context manager (``start()``/``stop()``; ``stop()`` is idempotent).
    ``target_address`` is scraped as job ``app`` (None: no such job); ``jobs`` maps more job
    names to their addresses, e.g. ``{"worker": ["127.0.0.1:9464"], "ingress": [...]}``.
    ``start()`` writes ``prometheus.yml`` into a fresh temp dir, runs the binary with
    ``--config.file``, ``--storage.tsdb.path`` (temp), ``--web.listen-address=
    127.0.0.1:<free port>``, polls ``/-/ready`` until 200 (retrying on a port clash).
    ``stop()`` SIGTERMs the pid (SIGKILL after ``stop_timeout``) and removes the temp dir.
    Attributes: ``url``, ``port``, ``pid``, ``binary``, ``tmpdir``, ``start_seconds``.
``query(promql, time=None) -> data``, ``query_range(promql, start, end, step) -> data``
    (raise ``PrometheusError`` when the API says ``status: error``).
``wait_for_query(promql, series=1, timeout=30) -> data``: poll until the instant query
    returns at least ``series`` series (no fixed sleeps); TimeoutError otherwise.
``log_text()``: Prometheus's log so far (survives ``stop()``).

Timings measured with Prometheus 2.42 (Debian 2.42.0+ds-5+deb12u1) on 2 cores:
start-up to ``/-/ready`` ~0.06 s, but the first sample lands ~5.7 s after start: the
discovery manager hands new targets to the scrape manager at most every 5 s, and no flag
changes that in 2.42. So wait on a query (``wait_for_query``), never on readiness alone;
``rate()``/``irate()`` need two samples (one more scrape interval), and a range query of
N steps needs N seconds of samples. Start one server per module (the fixture).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest
import yaml

from tests.support.binaries import find_binary, free_port, require_binary
from tests.support.waiting import wait_until
from tests.workflows.helpers import LoopbackHTTP

DEBIAN_BINARY = "/usr/bin/prometheus"
ENV_BINARY = "PROMETHEUS_BIN"


class PrometheusError(RuntimeError):
    """Prometheus failed to start, or its API answered with an error."""


def find_prometheus() -> tuple[str | None, str | None]:
    return find_binary("prometheus", DEBIAN_BINARY, ENV_BINARY, "prometheus")


def require_prometheus() -> str:
    return require_binary("prometheus", DEBIAN_BINARY, ENV_BINARY, "prometheus")


_free_port = free_port


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- the scrape target -------------------------------------------------------------------

class MetricsTarget(LoopbackHTTP):
    """``/metrics`` in the Prometheus text format, from counters the test controls."""

    path = "/metrics"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._growth: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}
        self.scrapes = 0
        super().__init__()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def _key(name: str, labels: Mapping[str, str]):
        return name, tuple(sorted(labels.items()))

    def set(self, name: str, labels: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._values[self._key(name, labels)] = value

    def inc(self, name: str, labels: Mapping[str, str], by: float = 1) -> None:
        with self._lock:
            key = self._key(name, labels)
            self._values[key] = self._values.get(key, 0) + by

    def grow(self, name: str, labels: Mapping[str, str], per_second: float) -> None:
        """From now on the counter rises by ``per_second`` every second (read at scrape time)."""
        with self._lock:
            key = self._key(name, labels)
            self._growth[key] = (time.monotonic(), per_second)
            self._values.setdefault(key, 0)

    def exposition(self) -> str:
        now = time.monotonic()
        with self._lock:
            self.scrapes += 1
            values = dict(self._values)
            for key, (since, rate) in self._growth.items():
                values[key] = values.get(key, 0) + rate * (now - since)
        out, typed = [], set()
        for (name, labels), value in sorted(values.items()):
            if name not in typed:
                typed.add(name)
                out.append(f"# TYPE {name} counter")
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {value!r}")
        return "\n".join(out) + "\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            body = self.server_state.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


# --- the server --------------------------------------------------------------------------

class Prometheus:
    def __init__(self, target_address: str | None, scrape_interval: str = "1s", start_timeout: float = 30.0,
                 stop_timeout: float = 10.0, binary: str | None = None,
                 jobs: Mapping[str, Sequence[str]] | None = None) -> None:
        self.target_address = target_address
        self.jobs = {**({"app": [target_address]} if target_address else {}), **{k: list(v) for k, v in (jobs or {}).items()}}
        if not self.jobs:
            raise ValueError("nothing to scrape: give a target_address or jobs")
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self.binary: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.start_seconds: float | None = None
        self._log_path: Path | None = None
        self._log_cache = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in self.jobs.items()],
        }

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Prometheus":
        if self.proc is not None:
            raise PrometheusError("already started")
        self.binary = self._binary or require_prometheus()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="selfheal-prom-"))
        try:
            config_path = self.tmpdir / "prometheus.yml"
            config_path.write_text(yaml.safe_dump(self.config()))
            began = time.monotonic()
            for attempt in range(5):
                if self._launch(config_path, attempt):
                    break
            self.start_seconds = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, config_path: Path, attempt: int) -> bool:
        """Start the process and wait until ready; False when the port was taken."""
        assert self.tmpdir is not None and self.binary is not None
        self.port = _free_port()
        self._log_path = self.tmpdir / f"prometheus.{attempt}.log"
        argv = [
            self.binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.tmpdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.tmpdir, close_fds=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                text = self._log_path.read_text(errors="replace")
                self._log_cache += text
                self.proc = self.pid = None
                if "address already in use" in text and attempt < 4:
                    return False
                raise PrometheusError(f"prometheus exited with {code} during start-up:\n{text[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise PrometheusError(f"prometheus not ready within {self.start_timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the pid (SIGKILL after stop_timeout), keep the log, remove the temp dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=self.stop_timeout)
        self.pid = None
        if self._log_path is not None and self._log_path.exists():
            self._log_cache += self._log_path.read_text(errors="replace")
        self._log_path = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def log_text(self) -> str:
        live = self._log_path.read_text(errors="replace") if self._log_path and self._log_path.exists() else ""
        return self._log_cache + live

    # -- API -----------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, promql: str, time: datetime | float | None = None) -> dict:
        params = {"query": promql}
        if time is not None:
            params["time"] = str(time.timestamp() if isinstance(time, datetime) else time)
        return self._get("/api/v1/query", params)

    def query_range(self, promql: str, start: datetime, end: datetime, step: float) -> dict:
        return self._get("/api/v1/query_range", {"query": promql, "start": str(start.timestamp()),
                                                 "end": str(end.timestamp()), "step": str(step)})

    def wait_for_query(self, promql: str, series: int = 1, timeout: float = 30.0) -> dict:
        def ready():
            data = self.query(promql)
            return data if len(data.get("result") or []) >= series else None

        return wait_until(ready, timeout=timeout, interval=0.1)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[Prometheus, MetricsTarget]]:
    """One real Prometheus scraping one ``MetricsTarget`` every second, for a module."""
    require_prometheus()
    with MetricsTarget() as target, Prometheus(target.address) as prom:
        yield prom, target
