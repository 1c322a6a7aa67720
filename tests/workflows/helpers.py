"""Helpers for workflow tests: whitelists and rules on disk, a notification sink, a worker."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from selfheal import worker as worker_module
from selfheal.activities.diagnose import load_rules
from selfheal import search
from selfheal.current_whitelist import CurrentWhitelist
from selfheal.activities.runner import CommandRunner, LocalRunner
from selfheal.cli.common import ended_record as ended  # noqa: F401 - the record an incident ended with
from selfheal.contract import Alert, IncidentInput
from selfheal.contract import IncidentSettings
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.workflows.incident import IncidentWorkflow

FAST = IncidentSettings(
    remind_after=timedelta(seconds=60),
    escalate_after=timedelta(seconds=120),
    expire_after=timedelta(seconds=180),
    diagnose_timeout=timedelta(seconds=30),
    remediation_timeout=timedelta(seconds=60),
    remediation_heartbeat=timedelta(seconds=5),
)


# These tests are about incidents, not identity: typed names count (tests/workflows/
# test_signed_approvals.py covers the channels that prove the person).
TYPED_NAMES_COUNT = """tiers:
  instance: {approvals: 0}
  service: {approvals: 1, channels: [ssh, slack, token, unverified]}
  fleet: {approvals: 2, channels: [ssh, slack, token, unverified]}
  region: {approvals: 2, channels: [ssh, slack, token, unverified]}
"""


def whitelist_yaml(unit: str, *, max_executions: int = 100, cooldown: str = "0s", extra: str = "") -> str:
    def entry(entry_id: str, alertname: str, radius: str) -> str:
        return f"""
  - id: {entry_id}
    kind: systemd.restart
    target: {{unit: {unit}, host: localhost, scope: user}}
    blast_radius: {radius}
    approvers: {{people: [alice, bob], groups: [sre]}}
    rate_limit: {{max_executions: {max_executions}, window: 1h}}
    cooldown: {cooldown}
    match: ['alertname="{alertname}"']
    verify: {{timeout: 10s}}
"""

    return (
        """version: 1
metadata: {reviewed_by: [alice], reviewed_at: 2026-11-25}
groups: {sre: [carol]}
""" + TYPED_NAMES_COUNT + """entries:"""
        + entry("restart-api", "ApiDown", "instance")
        + entry("restart-api-service", "ApiSlow", "service")
        + entry("restart-api-fleet", "ApiFleet", "fleet")
        + entry("restart-api-misdirected", "Misdirected", "instance")
        + """
  - id: rollback-checkout
    kind: ecs.rollback
    target: {cluster: demo, service: checkout, task_definition: "checkout:41", region: eu-west-1, account: "123456789012"}
    blast_radius: service
    approvers: {people: [alice, bob]}
    rate_limit: {max_executions: 1, window: 1h}
    cooldown: 0s
    match: ['alertname="CheckoutErrorRate"']
    verify: {timeout: 1m}
"""
        + extra
    )


def rules_yaml(unit: str) -> str:
    signatures = "".join(
        f"""
  - id: pool-exhausted-{alertname}
    summary: connection pool exhausted; a restart releases it
    match: ['alertname="{alertname}"']
    journal: {{unit: {unit}, scope: user}}
    pattern: 'connection pool exhausted'
    propose: {entry_id}
    confidence: 0.9
"""
        for alertname, entry_id in [("ApiDown", "restart-api"), ("ApiSlow", "restart-api-service"), ("ApiFleet", "restart-api-fleet")]
    )
    return f"""
lookback: 5m
signatures:{signatures}
  - id: misdirected
    summary: a diagnosis that proposes an entry the alert did not match
    match: ['alertname="Misdirected"']
    propose: rollback-checkout
    confidence: 0.99
"""


def alert(alertname: str, fingerprint: str | None = None, status: str = "firing", **labels: str) -> Alert:
    return Alert(
        source="test",
        status=status,
        labels={"alertname": alertname, **labels},
        annotations={"summary": f"{alertname} in a test"},
        starts_at=datetime.now(timezone.utc) - timedelta(seconds=5),
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
    )


class LoopbackHTTP:
    """A threaded HTTP server on 127.0.0.1 for the duration of a ``with`` block.

    Subclasses define ``Handler`` (a ``BaseHTTPRequestHandler``) and what it records.
    """

    path = "/"

    def __init__(self) -> None:
        outer = self

        class Handler(self.Handler):  # type: ignore[name-defined]
            server_state = outer

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class NotificationSink(LoopbackHTTP):
    """A loopback webhook that records the JSON it receives (the notification activity's peer)."""

    path = "/hook"

    def __init__(self) -> None:
        self.received: list[dict] = []
        super().__init__()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.server_state.received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

    def kinds(self, incident_id: str) -> list[str]:
        return [n["kind"] for n in self.received if n["incident_id"] == incident_id]


def settings_for(tmp: Path, unit: str, task_queue: str, notify_url: str | None, incident: IncidentSettings = FAST,
                 whitelist: str | None = None, rules: str | None = None) -> WorkerSettings:
    wl = tmp / f"whitelist-{task_queue}.yaml"
    wl.write_text(whitelist if whitelist is not None else whitelist_yaml(unit))
    rl = tmp / f"rules-{task_queue}.yaml"
    rl.write_text(rules if rules is not None else rules_yaml(unit))
    return WorkerSettings(task_queue=task_queue, whitelist=str(wl), diagnosis=str(rl), notify_url=notify_url, incident=incident)


def offline_aws():
    """AWS for tests that are not about AWS: every call fails at once, non-retryably, so a
    test's worker never reaches real AWS whatever credentials this machine has, and an
    approved AWS action ends ``failed`` quickly. The AWS tests use moto (``aws_world``)."""
    from temporalio.exceptions import ApplicationError

    from selfheal.activities.aws_clients import AwsClients

    class Offline(AwsClients):
        async def call(self, api, region, operation, /, **kwargs):
            raise ApplicationError(f"{api}:{operation}: no AWS in this test", type="Aws.Offline", non_retryable=True)

    return Offline()


@asynccontextmanager
async def running_worker(client: Client, settings: WorkerSettings, runner: CommandRunner | None = None, aws=None,
                         wrap: dict[str, Callable] | None = None):
    """A worker in this process; yields its CurrentWhitelist (``reload()`` as SIGHUP would).
    ``wrap``: activity name -> a function of the real activity that returns the one to run."""
    loaded = CurrentWhitelist(load_whitelist(settings.whitelist))
    attributes = await search.available(client, settings.namespace)
    async with httpx.AsyncClient() as http:
        activities = worker_module.build_activities(
            settings, loaded, load_rules(settings.diagnosis), client, runner or LocalRunner(), http, attributes,
            aws or offline_aws(),
        )
        if wrap:
            named = {activity_name(a): a for a in activities}
            if unknown := set(wrap) - set(named):
                raise KeyError(f"no such activities to wrap: {sorted(unknown)}")
            activities = [wrap[name](real) if name in wrap else real for name, real in named.items()]
        async with Worker(client, task_queue=settings.task_queue, workflows=worker_module.WORKFLOWS, activities=activities,
                          workflow_runner=worker_module.WORKFLOW_RUNNER), \
                worker_module.governor_worker(client, settings.task_queue):
            yield loaded


def activity_name(fn: Callable) -> str:
    from temporalio.activity import _Definition

    return _Definition.must_from_callable(fn).name


# (test name, handle) of every incident started, for ``pytest --record-histories``.
STARTED: list[tuple[str, object]] = []


async def start_incident(client: Client, task_queue: str, *alerts: Alert, incident_id: str | None = None):
    handle = await client.start_workflow(
        IncidentWorkflow.run,
        IncidentInput(alerts=list(alerts)),
        id=incident_id or f"incident-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
    )
    test = os.environ.get("PYTEST_CURRENT_TEST", "unknown").split("::")[-1].split(" ")[0]
    STARTED.append((test, handle))
    return handle


async def wait_for(probe: Callable, timeout: float = 30.0, interval: float = 0.1):
    """Poll an async probe until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def wait_status(handle, status: str, timeout: float = 30.0) -> None:
    async def probe():
        current = await handle.query(IncidentWorkflow.status)
        if current == "done" != status:
            record = await handle.query(IncidentWorkflow.audit)
            raise AssertionError(f"incident ended ({record.outcome}: {record.outcome_detail}) before reaching {status}")
        return current == status

    await wait_for(probe, timeout)


async def drill_of(incident) -> str:
    """The id of the drill an incident started, from the incident's own history."""
    async def started():
        history = await incident.fetch_history()
        ids = [e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
               for e in history.events if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED]
        return ids[0] if ids else None
    drill_id_ = await wait_for(started)
    # Recorded for the replay test (--record-histories) beside the incident's own history.
    test = os.environ.get("PYTEST_CURRENT_TEST", "unknown").split("::")[-1].split(" ")[0]
    STARTED.append((f"{test}_drill", incident._client.get_workflow_handle(drill_id_)))
    return drill_id_
