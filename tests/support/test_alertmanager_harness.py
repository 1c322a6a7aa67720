"""Self-test for the real Alertmanager harness (tests/support/alertmanager.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from .ports import free_port
from .alertmanager import alertmanager_factory  # noqa: F401  (pytest fixture)
from .alertmanager import (
    Alertmanager,
    AlertmanagerError,
    AlertmanagerUnavailable,
    require_alertmanager,
)

TOKEN = "test-token-7f3a"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# --------------------------------------------------------------------------
# a tiny loopback webhook receiver
# --------------------------------------------------------------------------


class Receiver:
    """Records POSTs; answers ``fail_status`` to the first ``fail_first`` of them."""

    def __init__(self, port: int = 0, fail_first: int = 0, fail_status: int = 503) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    failing = len(receiver.requests) < receiver.fail_first
                    code = receiver.fail_status if failing else 200
                    receiver.requests.append(
                        {
                            "t": time.monotonic(),
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                            "content_type": self.headers.get("Content-Type"),
                            "body": json.loads(body),
                            "answered": code,
                        }
                    )
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alertmanager/webhook"

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.snapshot() if r["answered"] == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


def _pid_alive(pid: int) -> bool:
    return subprocess.run(["ps", "-p", str(pid)], capture_output=True).returncode == 0


def _listening_sockets(pid: int) -> dict[str, list[str]]:
    """{"tcp": [local addr:port, ...], "udp": [...]} of sockets owned by pid."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found: dict[str, list[str]] = {"tcp": [], "udp": []}
    for proto, files in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
        for name in files:
            path = Path(f"/proc/{pid}/net/{name}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if inode not in inodes or (proto == "tcp" and state != "0A"):  # 0A = LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                if len(addr_hex) == 8:
                    addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
                else:
                    raw = bytes.fromhex(addr_hex)
                    addr = socket.inet_ntop(
                        socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    )
                found[proto].append(f"{addr}:{int(port_hex, 16)}")
    return found


# --------------------------------------------------------------------------
# prerequisites / config (no binary needed)
# --------------------------------------------------------------------------


def test_require_skips_without_ci_and_raises_with_ci(monkeypatch):
    monkeypatch.setenv("ALERTMANAGER_BIN", "/nonexistent/alertmanager")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/alertmanager"):
        require_alertmanager()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(AlertmanagerUnavailable, match="/nonexistent/alertmanager"):
        require_alertmanager()


def test_config_shape():
    cfg = Alertmanager.config_for("http://127.0.0.1:1/hook", bearer_token="t", group_by=["a", "b"])
    assert cfg["route"] == {
        "receiver": "webhook",
        "group_by": ["a", "b"],
        "group_wait": "0s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    }
    (receiver,) = cfg["receivers"]
    assert receiver["name"] == "webhook"
    assert receiver["webhook_configs"] == [
        {
            "url": "http://127.0.0.1:1/hook",
            "send_resolved": True,
            "max_alerts": 0,
            "http_config": {"authorization": {"type": "Bearer", "credentials": "t"}},
        }
    ]
    no_auth = Alertmanager.config_for("http://x/", send_resolved=False)
    assert "http_config" not in no_auth["receivers"][0]["webhook_configs"][0]
    assert no_auth["receivers"][0]["webhook_configs"][0]["send_resolved"] is False
    # What actually gets written is the YAML dump of the same dict.
    am = Alertmanager("http://127.0.0.1:1/hook", bearer_token="t", group_by=["a", "b"])
    assert yaml.safe_load(am.config_text) == cfg


# --------------------------------------------------------------------------
# the real thing
# --------------------------------------------------------------------------


def test_fire_resolve_auth_and_stop(receiver):
    require_alertmanager()
    labels = {"alertname": "DiskFull", "host": "db1", "severity": "page"}
    am = Alertmanager(receiver.url, bearer_token=TOKEN)
    with am:
        assert am.running
        assert am.url == f"http://127.0.0.1:{am.port}"
        pid = am.pid
        tmpdir = am.tmpdir
        assert tmpdir is not None and (tmpdir / "alertmanager.yml").is_file()

        # Loopback web port only; no gossip listener (TCP or UDP) at all.
        socks = _listening_sockets(pid)
        assert socks["tcp"] == [f"127.0.0.1:{am.port}"], socks
        assert socks["udp"] == [], socks

        posted = time.monotonic()
        am.post_alerts(
            [
                {
                    "labels": labels,
                    "annotations": {"summary": "disk / is 97% full"},
                    "generatorURL": "http://prometheus.example/graph?g0.expr=up",
                }
            ]
        )
        (firing,) = am.wait_until(receiver.snapshot, timeout=10)
        first_delay = firing["t"] - posted

        assert firing["path"] == "/alertmanager/webhook"
        assert firing["authorization"] == f"Bearer {TOKEN}"
        assert firing["content_type"] == "application/json"
        body = firing["body"]
        assert body["version"] == "4"
        assert body["status"] == "firing"
        assert body["receiver"] == "webhook"
        assert body["groupKey"] == '{}:{alertname="DiskFull"}'
        assert body["groupLabels"] == {"alertname": "DiskFull"}
        assert body["commonLabels"] == labels
        assert body["commonAnnotations"] == {"summary": "disk / is 97% full"}
        assert body["externalURL"] == am.url
        assert body["truncatedAlerts"] == 0
        (alert,) = body["alerts"]
        assert alert["status"] == "firing"
        assert alert["labels"] == labels
        assert alert["annotations"] == {"summary": "disk / is 97% full"}
        assert alert["generatorURL"] == "http://prometheus.example/graph?g0.expr=up"
        assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
        assert ISO.match(alert["startsAt"])
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"  # firing: no end yet

        # Alertmanager's own view of the alert.
        (stored,) = am.alerts()
        assert stored["fingerprint"] == alert["fingerprint"]
        assert stored["status"]["state"] == "active"

        resolved_at = time.monotonic()
        am.resolve(labels)
        am.wait_until(lambda: len(receiver.snapshot()) >= 2, timeout=10)
        resolved = receiver.snapshot()[1]
        resolved_delay = resolved["t"] - resolved_at
        rbody = resolved["body"]
        assert resolved["authorization"] == f"Bearer {TOKEN}"
        assert rbody["status"] == "resolved"
        assert rbody["groupKey"] == body["groupKey"]
        (ralert,) = rbody["alerts"]
        assert ralert["status"] == "resolved"
        assert ralert["fingerprint"] == alert["fingerprint"]
        assert ralert["startsAt"] == alert["startsAt"]
        assert ISO.match(ralert["endsAt"]) and ralert["endsAt"] != "0001-01-01T00:00:00Z"

        # No further notifications for a resolved group.
        time.sleep(1.5)
        assert len(receiver.snapshot()) == 2

    assert not am.running
    assert am.pid == pid
    assert not _pid_alive(pid)
    assert not tmpdir.exists()
    log = am.log_text()
    assert "Listening on" in log and "127.0.0.1" in log
    am.stop()  # idempotent
    print(f"first delivery {first_delay:.3f}s, resolved delivery {resolved_delay:.3f}s")
    assert first_delay < 5
    assert resolved_delay < 5


def test_retries_after_503_until_receiver_recovers():
    require_alertmanager()
    rec = Receiver(fail_first=3, fail_status=503)
    try:
        with Alertmanager(rec.url) as am:
            posted = time.monotonic()
            am.post_alerts([{"labels": {"alertname": "TemporalDown"}}])
            (ok,) = am.wait_until(rec.accepted, timeout=20)
            attempts = rec.snapshot()
            assert [a["answered"] for a in attempts] == [503, 503, 503, 200]
            # Every retry is the identical notification.
            keys = {(a["body"]["groupKey"], a["body"]["alerts"][0]["fingerprint"]) for a in attempts}
            assert len(keys) == 1
            assert ok["body"]["status"] == "firing"
            assert "Notify attempt failed" in am.log_text()
            am.wait_until(lambda: "Notify success" in am.log_text(), timeout=5)
            time.sleep(1.5)
            assert len(rec.snapshot()) == 4  # delivered once, not repeated
            gaps = [b["t"] - a["t"] for a, b in zip(attempts, attempts[1:])]
            print(f"attempts at {[round(a['t'] - posted, 2) for a in attempts]}, gaps {gaps}")
    finally:
        rec.close()


def test_retries_after_connection_refused():
    require_alertmanager()
    port = free_port()  # a port nobody listens on (yet)
    with Alertmanager(f"http://127.0.0.1:{port}/hook") as am:
        am.post_alerts([{"labels": {"alertname": "IngressDown"}}])
        am.wait_until(lambda: "connection refused" in am.log_text(), timeout=10)
        rec = Receiver(port=port)
        try:
            up = time.monotonic()
            (ok,) = am.wait_until(rec.accepted, timeout=15)
            print(f"delivered {ok['t'] - up:.2f}s after the receiver came up")
            assert ok["body"]["alerts"][0]["labels"] == {"alertname": "IngressDown"}
        finally:
            rec.close()


def test_start_failure_reports_log(receiver):
    require_alertmanager()
    am = Alertmanager(receiver.url, group_interval="0s")  # invalid: cannot be zero
    with pytest.raises(AlertmanagerError, match="group_interval cannot be zero"):
        am.start()
    assert am.tmpdir is None and not am.running


def test_factory_fixture_and_send_resolved_false(receiver, alertmanager_factory):  # noqa: F811
    am = alertmanager_factory(receiver.url, send_resolved=False, group_interval="200ms")
    labels = {"alertname": "Quiet"}
    am.post_alerts([{"labels": labels}])
    am.wait_until(receiver.snapshot, timeout=10)
    am.resolve(labels)
    am.wait_until(lambda: not am.alerts(), timeout=5)  # resolved alerts drop out of the API
    time.sleep(1.0)  # several 200ms ticks: a resolved webhook would have been sent
    assert [r["body"]["status"] for r in receiver.snapshot()] == ["firing"]
