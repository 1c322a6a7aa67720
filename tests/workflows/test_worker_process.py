"""The worker as users run it: a separate process, killed with SIGKILL and started again.

Whichever step the worker dies in, a new worker resumes the incident within 15 s of
starting, and a remediation interrupted mid-way has the effect of one. Each step is held
open by something real while the worker is killed: a gate in front of ``systemctl show``
(the world read before acting), a unit whose start takes 3 s (the restart), a health
endpoint that stays unhealthy (the verification), and for the reservation, the kill
right after the approval that schedules it.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState

from selfheal.contract import Approval, AuditRecord
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.systemd_user import SystemdUser
from tests.workflows.helpers import LoopbackHTTP, alert, rules_yaml, start_incident, wait_for, wait_status, whitelist_yaml

ROOT = Path(__file__).resolve().parents[2]
RESUME_WITHIN = 15.0  # seconds from the new worker's start


def worker_process(temporal_env, task_queue: str, tmp: Path, whitelist: str, rules: str, prefix: list[str],
                   log: Path) -> subprocess.Popen:
    (tmp / "wl.yaml").write_text(whitelist)
    (tmp / "rules.yaml").write_text(rules)
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SELFHEAL_TASK_QUEUE": task_queue,
        "SELFHEAL_WHITELIST": str(tmp / "wl.yaml"),
        "SELFHEAL_DIAGNOSIS": str(tmp / "rules.yaml"),
        "SELFHEAL_COMMAND_PREFIX": shlex.join(prefix),
        # Heartbeat and sticky timeouts are the defaults users get: this test times them.
    }
    return subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli", "worker"], cwd=ROOT, env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def gated(gate: Path, prefix: list[str]) -> list[str]:
    """A command prefix that holds every ``systemctl show`` while ``gate`` exists."""
    script = 'case " $* " in *" show "*) while [ -e "$0" ]; do sleep 0.05; done;; esac; exec "$@"'
    return ["/bin/sh", "-c", script, str(gate), *prefix]


class Health(LoopbackHTTP):
    """A loopback health endpoint that answers 503 until the test makes it healthy."""

    path = "/healthz"

    def __init__(self) -> None:
        self.healthy = False
        super().__init__()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.server_state.healthy else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()


async def activity_started(handle, name: str) -> bool:
    description = await handle.describe()
    return any(
        a.activity_type.name == name and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for a in description.raw_description.pending_activities
    )


async def resumed_after(handle, since: float) -> float:
    """Seconds from ``since`` (wall clock) until the workflow moved on after the interrupted step.

    That is the first workflow task completed after the first activity completed after
    ``since``: the activity retried on the new worker, and the workflow (whose cache and
    sticky queue were on the dead worker) took the result.
    """

    async def moved_on():
        history = await handle.fetch_history()
        activity_done = False
        for event in history.events:
            at = event.event_time.ToDatetime().timestamp()
            if at <= since:
                continue
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                activity_done = True
            elif activity_done and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return at
        return None

    return await wait_for(moved_on, timeout=60, interval=0.2) - since


STEPS = ["reserve_action", "read_unit_state", "restart_unit", "verify_remediation"]


@pytest.mark.parametrize("step", STEPS)
async def test_worker_killed_in_any_step_resumes_within_15s_and_acts_once(step, temporal_env, task_queue, tmp_path, systemd_user):
    sd = systemd_user
    name = f"slow-{uuid.uuid4().hex[:8]}.service"
    starts, gate, log = tmp_path / "starts", tmp_path / "gate", tmp_path / "worker.log"
    # Each start is logged, then takes 3 s: long enough to kill the worker mid-restart.
    sd.install_unit(name, SystemdUser.simple_service(
        "while true; do echo ERROR connection pool exhausted; sleep 1; done",
        ExecStartPre=f"/bin/sh -c \"echo start >> {starts}; sleep {3 if step == 'restart_unit' else 0}\"",
    ))
    sd.wait_until(lambda: sd.journal_entries(name, grep="connection pool exhausted"), timeout=15)
    baseline = sd.show(name, "InvocationID")["InvocationID"]

    with Health() as health:
        whitelist = whitelist_yaml(name)
        if step == "verify_remediation":
            whitelist = whitelist.replace("verify: {timeout: 10s}", f"verify: {{timeout: 60s, http: {{url: '{health.url}'}}}}", 1)
        else:
            health.healthy = True
        args = (temporal_env, task_queue, tmp_path, whitelist, rules_yaml(name), gated(gate, sd.ns_command_prefix), log)
        if step == "read_unit_state":
            gate.touch()
        first, second = worker_process(*args), None
        try:
            handle = await start_incident(temporal_env.client, task_queue, alert("ApiSlow" if step == "reserve_action" else "ApiDown"))
            if step == "reserve_action":
                await wait_status(handle, "awaiting_approval", timeout=60)
                await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
            elif step == "restart_unit":
                await wait_for(lambda: _restart_in_flight(handle, starts), timeout=60)
            else:
                await wait_for(lambda: activity_started(handle, step), timeout=60)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            gate.unlink(missing_ok=True)
            health.healthy = True

            began = time.time()
            second = worker_process(*args)
            resumed = await resumed_after(handle, began)
            record: AuditRecord = await handle.result()
            assert stop(second) == 0, log.read_text()[-4000:]  # SIGTERM: a graceful exit (or the faulthandler trace)
        finally:
            stop(first)
            if second is not None:
                stop(second)
            gate.unlink(missing_ok=True)
            sd.systemctl("stop", name, check=False)

    assert resumed < RESUME_WITHIN, f"{step}: resumed {resumed:.1f}s after the new worker started"
    assert record.outcome == "remediated", (record.outcome_detail, log.read_text()[-3000:])
    assert len(starts.read_text().splitlines()) == 2  # the install, and exactly one restart
    if step == "restart_unit":
        assert record.remediation.action == "already_done"  # the retry found the work done
        assert record.remediation.before.invocation_id != baseline
        assert await _restart_attempts(handle) == 2
    else:
        assert record.remediation.action == "executed" and record.remediation.before.invocation_id == baseline


async def _restart_in_flight(handle, starts: Path) -> bool:
    return await activity_started(handle, "restart_unit") and starts.exists() and len(starts.read_text().splitlines()) == 2


async def _restart_attempts(handle) -> int:
    history = await handle.fetch_history()
    scheduled = next(
        e.event_id for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "restart_unit"
    )
    return next(
        e.activity_task_started_event_attributes.attempt for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled
    )


def test_worker_refuses_to_start_with_an_invalid_whitelist(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(whitelist_yaml("x.service").replace("blast_radius: instance", "blast_radius: galaxy", 1))
    result = subprocess.run(
        [sys.executable, "-m", "selfheal.cli", "worker", "--whitelist", str(bad), "--address", "127.0.0.1:1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr and "blast radius 'galaxy' has no tier" in result.stderr
    assert "refusing to start" in result.stderr
