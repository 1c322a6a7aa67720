"""The worker as users run it: a separate process, killed and restarted."""

import os
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState

from selfheal.models import AuditRecord
from tests.support.systemd_user import SystemdUser
from tests.workflows.helpers import alert, rules_yaml, start_incident, wait_for, whitelist_yaml

ROOT = Path(__file__).resolve().parents[2]


def worker_process(temporal_env, task_queue: str, tmp: Path, unit: str, prefix: list[str], log: Path) -> subprocess.Popen:
    (tmp / "wl.yaml").write_text(whitelist_yaml(unit))
    (tmp / "rules.yaml").write_text(rules_yaml(unit))
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SELFHEAL_TASK_QUEUE": task_queue,
        "SELFHEAL_WHITELIST": str(tmp / "wl.yaml"),
        "SELFHEAL_DIAGNOSIS": str(tmp / "rules.yaml"),
        "SELFHEAL_COMMAND_PREFIX": shlex.join(prefix),
        # A killed worker's activity is retried once its heartbeat is this late.
        "SELFHEAL_REMEDIATION_HEARTBEAT": "2s",
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


async def test_worker_killed_mid_restart_resumes_and_restarts_exactly_once(temporal_env, task_queue, tmp_path, systemd_user):
    sd = systemd_user
    name = f"slow-{uuid.uuid4().hex[:8]}.service"
    starts = tmp_path / "starts"
    # Each start is logged, then takes 3 s: long enough to kill the worker mid-restart.
    sd.install_unit(name, SystemdUser.simple_service(
        "while true; do echo ERROR connection pool exhausted; sleep 1; done",
        ExecStartPre=f"/bin/sh -c \"echo start >> {starts}; sleep 3\"",
    ))
    sd.wait_until(lambda: sd.journal_entries(name, grep="connection pool exhausted"), timeout=15)
    baseline = sd.show(name, "InvocationID")["InvocationID"]
    log = tmp_path / "worker.log"

    first = worker_process(temporal_env, task_queue, tmp_path, name, sd.ns_command_prefix, log)
    second = None
    try:
        handle = await start_incident(temporal_env.client, task_queue, alert("ApiDown"))

        async def restart_in_flight():
            description = await handle.describe()
            running = [
                a for a in description.raw_description.pending_activities
                if a.activity_type.name == "restart_unit" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ]
            return running and len(starts.read_text().splitlines()) == 2

        await wait_for(restart_in_flight, timeout=60)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL

        second = worker_process(temporal_env, task_queue, tmp_path, name, sd.ns_command_prefix, log)
        record: AuditRecord = await handle.result()
        assert stop(second) == 0  # SIGTERM: a graceful exit
    finally:
        stop(first)
        if second is not None:
            stop(second)
        sd.systemctl("stop", name, check=False)

    assert record.outcome == "remediated", (record.outcome_detail, log.read_text()[-3000:])
    assert len(starts.read_text().splitlines()) == 2  # the install, and exactly one restart
    assert record.remediation.action == "already_done"
    assert record.remediation.before.invocation_id != baseline
    history = await handle.fetch_history()
    scheduled = next(
        e.event_id for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "restart_unit"
    )
    started = next(
        e.activity_task_started_event_attributes for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled
    )
    assert started.attempt == 2  # the first attempt died with its worker; the second found the work done


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
