"""An AWS remediation interrupted by SIGKILL has the effect of one.

The worker runs as users run it (a process, AWS credentials from the environment, the
endpoint from SELFHEAL_AWS_ENDPOINT_URL) and reaches moto_server through a loopback proxy
that holds one write open: the worker is killed while that write is in flight. The proxy
then lets the held request through (the case where AWS did act), and a new worker resumes
the incident: it must not act a second time.
"""

from __future__ import annotations

import signal
import threading
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from selfheal.dev.aws_sim import DEMO_CREDENTIALS
from selfheal.contract import Approval, AuditRecord
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.moto import operation
from tests.workflows.helpers import LoopbackHTTP, alert, start_incident, wait_for, wait_status
from tests.workflows.test_incident_aws import RULES, WHITELIST
from tests.workflows.test_worker_process import stop, worker_process


class HoldingProxy(LoopbackHTTP):
    """Forwards to moto; the first request for ``hold`` waits until ``release`` is set."""

    def __init__(self, upstream: str, hold: str, instance: str | None = None):
        self.upstream, self.hold, self.instance = upstream, hold, instance
        self.held, self.release = threading.Event(), threading.Event()
        super().__init__()

    @property
    def url(self) -> str:
        return super().url.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            state = self.server_state
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            op = operation({"headers": dict(self.headers), "body": body.decode(errors="replace"), "url": self.path,
                            "method": self.command})
            if op == state.hold and not state.held.is_set() and (state.instance is None or state.instance in body.decode()):
                state.held.set()
                state.release.wait(60)
            answer = httpx.request(self.command, state.upstream + self.path, content=body, headers=headers, timeout=30)
            try:
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)
            except OSError:
                pass  # the worker that asked was killed

        do_GET = do_POST = do_PUT = do_DELETE = _forward


@pytest.mark.parametrize("kind", ["ecs", "ec2"])
async def test_a_worker_killed_mid_aws_write_acts_once(kind, temporal_env, task_queue, tmp_path, aws_world, monkeypatch):
    first_id, second_id, _ = aws_world.seeded["batch_instances"]
    hold, instance = ("UpdateService", None) if kind == "ecs" else ("RebootInstances", second_id)
    log = tmp_path / "worker.log"
    with HoldingProxy(aws_world.url, hold, instance) as proxy:
        for key, value in {**DEMO_CREDENTIALS, "SELFHEAL_AWS_ENDPOINT_URL": proxy.url, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(key, value)
        args = (temporal_env, task_queue, tmp_path, WHITELIST, RULES, [], log)
        first, second = worker_process(*args), None
        try:
            if kind == "ecs":
                handle = await start_incident(temporal_env.client, task_queue, alert("CheckoutErrorRate"))
                approvers = ["alice"]
            else:
                handle = await start_incident(temporal_env.client, task_queue, alert("BatchAgentSilent", instance_id=first_id),
                                              alert("BatchAgentSilent", instance_id=second_id))
                approvers = ["alice", "bob"]
            await wait_status(handle, "awaiting_approval", timeout=60)
            for person in approvers:
                await handle.execute_update(IncidentWorkflow.approve, Approval(approver=person))
            await wait_for(lambda: _is_set(proxy.held), timeout=60)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            proxy.release.set()  # the held write reaches AWS after all
            second = worker_process(*args)
            record: AuditRecord = await handle.result()
            assert stop(second) == 0, log.read_text()[-4000:]
        finally:
            proxy.release.set()
            stop(first)
            if second is not None:
                stop(second)
    assert record.outcome == "remediated", (record.outcome_detail, log.read_text()[-3000:])
    assert record.remediation.action == "already_done", record.remediation.detail
    if kind == "ecs":
        assert aws_world.writes() == ["UpdateService"]
    else:
        assert sorted(aws_world.writes()) == ["CreateTags", "CreateTags", "RebootInstances", "RebootInstances"]


async def _is_set(event: threading.Event) -> bool:
    return event.is_set()
