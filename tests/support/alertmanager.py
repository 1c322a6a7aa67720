"""Test harness: a real Prometheus Alertmanager on loopback.

Starts the ``prometheus-alertmanager`` binary (Debian package
``prometheus-alertmanager``, Alertmanager 0.25) with a generated config whose
single route delivers every alert to ONE webhook receiver at a URL chosen by
the test, so a webhook ingress can be exercised end to end: the test posts
alerts to Alertmanager's API and Alertmanager itself groups, delivers,
retries and resolves them.

Usage (from a test module in tests/support use ``from .alertmanager import ...``;
elsewhere ``from tests.support.alertmanager import ...``)::

    def test_ingress(ingress_url):
        require_alertmanager()                  # skip (or fail when CI=true)
        with Alertmanager(ingress_url, bearer_token="s3cret") as am:
            am.post_alerts([{"labels": {"alertname": "DiskFull", "host": "db1"},
                             "annotations": {"summary": "disk full"}}])
            ...                                 # ingress receives a webhook
            am.resolve({"alertname": "DiskFull", "host": "db1"})
            ...                                 # ingress receives "resolved"

API
---
``require_alertmanager() -> str``
    Path of the binary: ``$ALERTMANAGER_BIN`` if set, else
    ``prometheus-alertmanager`` / ``alertmanager`` on PATH, else
    ``/usr/bin/prometheus-alertmanager``.  When none is usable the calling
    test is skipped; with ``CI=true`` ``AlertmanagerUnavailable`` is raised
    instead (the test fails).
``Alertmanager(webhook_url, bearer_token=None, group_by=("alertname",),
group_wait="0s", group_interval="1s", repeat_interval="1h",
send_resolved=True, log_level="debug", start_timeout=15.0,
stop_timeout=10.0, binary=None, webhook_extra=None)``
    Context manager (``start()``/``stop()`` are public too; ``stop()`` is
    idempotent).  ``start()`` writes ``alertmanager.yml`` into a fresh temp
    dir, runs the binary with ``--config.file``, ``--storage.path`` (temp),
    ``--web.listen-address=127.0.0.1:<free port>``,
    ``--cluster.listen-address=`` (empty: no gossip/HA, which would otherwise
    bind 0.0.0.0:9094 and add a peer-wait before every notification) and
    ``--log.level``, then polls ``GET /-/ready`` until it answers 200.
    ``stop()`` sends SIGTERM to the pid, waits ``stop_timeout``, SIGKILLs on
    timeout and removes the temp dir (the log is kept in memory).
    Attributes: ``url`` (``http://127.0.0.1:<port>``), ``port``, ``pid``,
    ``binary``, ``config`` (dict), ``config_text``, ``tmpdir``,
    ``start_seconds``.
``post_alerts(alerts)``
    POST ``/api/v2/alerts``.  Each alert is a dict with ``labels`` (required),
    optional ``annotations``, ``startsAt``, ``endsAt`` (RFC 3339 strings or
    ``datetime`` objects, naive = UTC) and ``generatorURL``.  Without
    ``endsAt`` Alertmanager sets endsAt = now + resolve_timeout (5m).
``resolve(labels, annotations=None)``
    Re-post the alert with ``endsAt`` = now, which resolves it.  The resolved
    webhook is sent at the group's next flush (see timings below).
``alerts(**filters) -> list[dict]``
    ``GET /api/v2/alerts`` (e.g. ``am.alerts(active="false")``).
``log_text() -> str``
    Alertmanager's stdout+stderr (logfmt); still available after ``stop()``.
``wait_until(predicate, timeout=10.0, interval=0.05)``
    Poll helper (static): returns the truthy value or raises TimeoutError.
``Alertmanager.config_for(...) -> dict``
    The config dict, without starting anything.

Config used (defaults)::

    route:
      receiver: webhook
      group_by: [alertname]
      group_wait: 0s
      group_interval: 1s
      repeat_interval: 1h
    receivers:
    - name: webhook
      webhook_configs:
      - url: <webhook_url>
        send_resolved: true
        max_alerts: 0
        http_config:                   # only with bearer_token
          authorization: {type: Bearer, credentials: <bearer_token>}

Timings measured with Alertmanager 0.25 (Debian 0.25.0-1+b4), defaults above
---------------------------------------------------------------------------
* Start-up to ``/-/ready`` == 200: ~0.1-0.15 s.
* ``group_wait: 0s`` is honoured: the first webhook lands ~5 ms after
  ``POST /api/v2/alerts`` (a new aggregation group flushes at once).
  ``group_interval`` and ``repeat_interval`` cannot be 0 (config error); any
  positive duration ("100ms") is accepted.
* Everything after the first flush happens on the group's ``group_interval``
  tick: the "resolved" webhook is NOT sent on ``resolve()`` but at the next
  tick, 0..group_interval later (measured 0.70 s with 1s, 0.10 s with
  100ms); likewise a new alert joining an already-notified group.  A repeat
  of an unchanged firing group goes out at the first tick strictly after
  ``repeat_interval`` (repeat 3s / interval 1s -> 4.0 s).
* Retry on 5xx or a transport error (connection refused/reset): the
  notifier retries within one flush with exponential backoff (cenkalti/backoff
  defaults: first attempt immediate, then 500 ms x1.5 per step, +-50 %
  jitter) until the flush's context expires after max(group_interval, 10 s).
  A failed flush writes no notification-log entry, and the next flush starts
  immediately (its 1s timer has long fired), re-sending with a fresh backoff.
  So retries never stop; attempts at ~0, 0.5, 1.3, 2.5, 4.5, 6.5, 8.5,
  10.0 (new flush), 10.5, ... s.  Measured over 503-outages of 3-33 s and a
  25 s connection-refused outage: largest gap between attempts 2.0-4.3 s,
  delivery 0-2.2 s after the receiver recovered (bound ~5.7 s).  With a
  large group_interval the gaps grow (30s: gaps up to 8 s) -- keep it small.
* 4xx (400, 429, ...) is NOT retried within the flush ("unrecoverable"),
  but because the failed flush leaves no log entry it is re-sent at every
  following ``group_interval`` tick (1 s later with the default).
* Every retry carries the payload snapshot taken at flush time: a
  ``resolve()`` during a retry series is still delivered as "firing" first,
  followed by "resolved" at the next tick.
* An alert that fires AND resolves while the receiver stays down past the
  first flush's 10 s retry window is never delivered at all (a new flush
  with only resolved, never-notified alerts sends nothing).

Pitfalls
--------
* Pick a free port for ``--web.listen-address`` (racy: start() retries on
  "address already in use").  Never rely on the default :9093/:9094.
* Without ``--cluster.listen-address=`` Alertmanager binds 0.0.0.0:9094 and
  waits for peers before every notification.
* ``resolve()`` must NOT send an ``endsAt`` earlier than the original
  ``startsAt`` (the API rejects endsAt < startsAt; an alert ending before the
  stored one started is not merged with it).  endsAt = now is safe.
* ``send_resolved: false`` suppresses resolved webhooks entirely.
* Debian's package enables a systemd unit (``prometheus-alertmanager.service``);
  in containers policy-rc.d usually prevents it from starting, but on a real
  host it may occupy :9093/:9094 -- irrelevant to this harness, which uses its
  own port and no cluster port.
"""

from __future__ import annotations

import datetime as _dt
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
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pytest

from tests.support.waiting import wait_until
import yaml
from tests.support.ports import free_port  # noqa: F401 (its users import it from here)

DEBIAN_BINARY = "/usr/bin/prometheus-alertmanager"
BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")
ENV_BINARY = "ALERTMANAGER_BIN"
RECEIVER_NAME = "webhook"


class AlertmanagerUnavailable(RuntimeError):
    """The Alertmanager binary is missing (raised instead of skipping under CI=true)."""


class AlertmanagerError(RuntimeError):
    """Alertmanager failed to start, or an API call against it failed."""


# --------------------------------------------------------------------------
# prerequisites
# --------------------------------------------------------------------------


def find_alertmanager() -> tuple[str | None, str]:
    """(path, problem): the usable binary or None plus a description why not."""
    override = os.environ.get(ENV_BINARY, "").strip()
    if override:
        path = shutil.which(override) or override
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, ""
        return None, f"${ENV_BINARY}={override!r} is not an executable file"
    for name in BINARY_NAMES:
        path = shutil.which(name)
        if path:
            return path, ""
    if os.path.isfile(DEBIAN_BINARY) and os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY, ""
    return None, (
        f"{DEBIAN_BINARY} missing (apt-get install prometheus-alertmanager, "
        f"or set ${ENV_BINARY})"
    )


def require_alertmanager() -> str:
    """Return the Alertmanager binary path, or skip the current test.

    With ``CI=true`` in the environment a missing binary raises
    ``AlertmanagerUnavailable`` instead of skipping.
    """
    path, problem = find_alertmanager()
    if path:
        return path
    reason = f"real Alertmanager unavailable: {problem}"
    if os.environ.get("CI", "").strip().lower() == "true":
        raise AlertmanagerUnavailable(reason)
    pytest.skip(reason)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def rfc3339(value: _dt.datetime | str | None = None) -> str:
    """RFC 3339 UTC timestamp (``now`` when value is None); strings pass through."""
    if isinstance(value, str):
        return value
    if value is None:
        value = _dt.datetime.now(_dt.timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    value = value.astimezone(_dt.timezone.utc)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normalise_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    if "labels" not in alert or not alert["labels"]:
        raise ValueError(f"alert needs non-empty 'labels': {alert!r}")
    out: dict[str, Any] = {"labels": {str(k): str(v) for k, v in alert["labels"].items()}}
    if alert.get("annotations"):
        out["annotations"] = {str(k): str(v) for k, v in alert["annotations"].items()}
    for key in ("startsAt", "endsAt"):
        if alert.get(key) is not None:
            out[key] = rfc3339(alert[key])
    if alert.get("generatorURL"):
        out["generatorURL"] = str(alert["generatorURL"])
    unknown = set(alert) - {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    if unknown:
        raise ValueError(f"unknown alert keys {sorted(unknown)}")
    return out


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """preexec_fn that makes the child die with the test process (Linux).

    PR_SET_PDEATHSIG fires when the parent *thread* exits, so it is only used
    when starting from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


# --------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------


class Alertmanager:
    """A real Alertmanager on 127.0.0.1 delivering to one webhook URL."""

    def __init__(
        self,
        webhook_url: str,
        bearer_token: str | None = None,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        send_resolved: bool = True,
        *,
        log_level: str = "debug",
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        binary: str | None = None,
        webhook_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self.config = self.config_for(
            webhook_url,
            bearer_token=bearer_token,
            group_by=group_by,
            group_wait=group_wait,
            group_interval=group_interval,
            repeat_interval=repeat_interval,
            send_resolved=send_resolved,
            webhook_extra=webhook_extra,
        )
        self.config_text = yaml.safe_dump(self.config, sort_keys=False)
        self.binary: str | None = None
        self.proc: subprocess.Popen | None = None
        self.tmpdir: Path | None = None
        self.port: int | None = None
        self.start_seconds: float | None = None
        self._log_path: Path | None = None
        self._log_cache = ""
        self._pid: int | None = None

    # -- config ------------------------------------------------------------

    @staticmethod
    def config_for(
        webhook_url: str,
        bearer_token: str | None = None,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        send_resolved: bool = True,
        webhook_extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        webhook: dict[str, Any] = {
            "url": webhook_url,
            "send_resolved": bool(send_resolved),
            "max_alerts": 0,
        }
        if bearer_token is not None:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": bearer_token}
            }
        if webhook_extra:
            webhook.update(webhook_extra)
        return {
            "route": {
                "receiver": RECEIVER_NAME,
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": RECEIVER_NAME, "webhook_configs": [webhook]}],
        }

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise AlertmanagerError("Alertmanager not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id (still readable after stop(), to check it is gone)."""
        if self._pid is None:
            raise AlertmanagerError("Alertmanager not started")
        return self._pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Alertmanager":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Alertmanager":
        if self.proc is not None:
            raise AlertmanagerError("already started")
        self.binary = self._binary or require_alertmanager()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="selfheal-am-"))
        try:
            config_path = self.tmpdir / "alertmanager.yml"
            config_path.write_text(self.config_text)
            (self.tmpdir / "data").mkdir()
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
        """Start the process and wait for readiness; False = port clash, retry."""
        assert self.tmpdir is not None and self.binary is not None
        self.port = free_port()
        self._log_path = self.tmpdir / f"alertmanager.{attempt}.log"
        argv = [
            self.binary,
            f"--config.file={config_path}",
            f"--storage.path={self.tmpdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url=http://127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            f"--log.level={self.log_level}",
        ]
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                preexec_fn=_pdeathsig_preexec(),
                close_fds=True,
            )
        self._pid = self.proc.pid
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                text = self._log_path.read_text(errors="replace")
                self._log_cache += text
                self.proc = None
                if "address already in use" in text and attempt < 4:
                    return False
                raise AlertmanagerError(
                    f"Alertmanager exited with {code} during start-up:\n{text}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise AlertmanagerError(
                    f"Alertmanager not ready within {self.start_timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM the process (SIGKILL after stop_timeout), remove the temp dir."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
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
        if self._log_path is not None and self._log_path.exists():
            self._log_cache += self._log_path.read_text(errors="replace")
        self._log_path = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def log_text(self) -> str:
        """Alertmanager's log (logfmt) so far; survives stop()."""
        live = ""
        if self._log_path is not None and self._log_path.exists():
            live = self._log_path.read_text(errors="replace")
        return self._log_cache + live

    # -- API ---------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise AlertmanagerError(f"{method} {path} -> {e.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None

    def post_alerts(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts (labels, annotations, startsAt, endsAt, generatorURL)."""
        self._request("POST", "/api/v2/alerts", [_normalise_alert(a) for a in alerts])

    def resolve(
        self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
    ) -> None:
        """Resolve the alert with these labels (re-post it with endsAt = now)."""
        alert: dict[str, Any] = {"labels": dict(labels), "endsAt": rfc3339()}
        if annotations:
            alert["annotations"] = dict(annotations)
        self.post_alerts([alert])

    def alerts(self, **filters: str) -> list[dict]:
        """GET /api/v2/alerts with query filters (active, silenced, ...)."""
        query = urllib.parse.urlencode(filters)
        return self._request("GET", "/api/v2/alerts" + (f"?{query}" if query else ""))

    wait_until = staticmethod(wait_until)


@pytest.fixture
def alertmanager_factory() -> Iterator[Callable[..., Alertmanager]]:
    """``alertmanager_factory(webhook_url, **kw)`` -> started Alertmanager, stopped at teardown."""
    started: list[Alertmanager] = []

    def make(webhook_url: str, **kw: Any) -> Alertmanager:
        require_alertmanager()
        am = Alertmanager(webhook_url, **kw)
        started.append(am)
        return am.start()

    yield make
    for am in reversed(started):
        am.stop()
