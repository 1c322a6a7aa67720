"""A real Prometheus scrapes a real worker and a real ingress, and answers for an incident.

Both run as users run them (``selfheal worker --metrics-address``, ``selfheal ingress``),
as processes on loopback that the test stops by pid. An alert goes in through the ingress,
the worker heals a real systemd unit, and the numbers are read back through Prometheus's
HTTP API, so names, labels and the exposition format are what a dashboard would see.
A worker restarted mid-incident rebuilds it from history: the decision stays counted once.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from selfheal.contract import Approval, AuditRecord
from selfheal.contract.governor import Pause, governor_id
from selfheal.workflows.governor import GovernorWorkflow
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.payloads import alertmanager, body, prom_alert
from tests.ingress.served import free_port
from tests.support.prometheus import Prometheus, require_prometheus
from tests.workflows.helpers import alert, rules_yaml, start_incident, wait_for, wait_status, whitelist_yaml
from tests.workflows.test_worker_process import stop

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-test-token"


def selfheal_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def worker(temporal_env, task_queue: str, tmp: Path, unit: str, prefix: list[str], metrics: str, log: Path):
    (tmp / "wl.yaml").write_text(whitelist_yaml(unit))
    (tmp / "rules.yaml").write_text(rules_yaml(unit))
    return selfheal_process(["worker", "--metrics-address", metrics], {
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SELFHEAL_TASK_QUEUE": task_queue,
        "SELFHEAL_WHITELIST": str(tmp / "wl.yaml"),
        "SELFHEAL_DIAGNOSIS": str(tmp / "rules.yaml"),
        "SELFHEAL_COMMAND_PREFIX": shlex.join(prefix),
    }, log)


async def answering(url: str, proc: subprocess.Popen, log: Path) -> None:
    async def probe():
        assert proc.poll() is None, f"{url}: the process exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(url, timeout=2)).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(probe, timeout=60, interval=0.2)


async def settles(prom: Prometheus, promql: str, expected: float, timeout: float = 60) -> None:
    """Poll the instant query until it answers exactly one series whose value is ``expected``."""
    seen: list = []

    async def probe():
        result = (await asyncio.to_thread(prom.query, promql))["result"]
        seen[:] = [(r["metric"], r["value"][1]) for r in result]
        return len(result) == 1 and float(result[0]["value"][1]) == expected

    try:
        await wait_for(probe, timeout=timeout, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{promql}: wanted {expected}, Prometheus answers {seen}") from None


async def test_prometheus_answers_for_an_incident_healed_through_the_ingress_and_the_worker(
        temporal_env, task_queue, tmp_path, unit, systemd_user):
    require_prometheus()
    worker_at, ingress_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    worker_log, ingress_log = tmp_path / "worker.log", tmp_path / "ingress.log"
    processes = [
        worker(temporal_env, task_queue, tmp_path, unit.name, systemd_user.ns_command_prefix, worker_at, worker_log),
        selfheal_process(["ingress", "--host", "127.0.0.1", "--port", ingress_at.split(":")[1], "--task-queue", task_queue,
                          "--address", temporal_env.client.service_client.config.target_host],
                         {"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN": TOKEN}, ingress_log),
    ]
    try:
        with Prometheus(None, jobs={"worker": [worker_at], "ingress": [ingress_at]}) as prom:
            await answering(f"http://{worker_at}/metrics", processes[0], worker_log)
            await answering(f"http://{ingress_at}/healthz", processes[1], ingress_log)
            async with httpx.AsyncClient() as http:
                sent = await http.post(f"http://{ingress_at}/v1/alerts/alertmanager",
                                       content=body(alertmanager(prom_alert(alertname="ApiDown", fingerprint=uuid.uuid4().hex[:16]))),
                                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            assert sent.status_code == 202, sent.text
            [incident] = sent.json()["incidents"]
            handle = temporal_env.client.get_workflow_handle(incident["id"], result_type=AuditRecord)
            record = await asyncio.wait_for(handle.result(), 120)
            assert record.outcome == "remediated", (record.outcome_detail, worker_log.read_text()[-3000:])

            await settles(prom, 'up{job="worker"}', 1)
            await settles(prom, 'up{job="ingress"}', 1)
            # The ingress: what it answered, per alert, and the request.
            await settles(prom, 'selfheal_ingress_alerts_total{source="alertmanager",answer="delivered"}', 1)
            await settles(prom, 'selfheal_ingress_requests_total{route="/v1/alerts/alertmanager",code="202"}', 1)
            # The worker: what the incident's workflow recorded, once, through the SDK's meter.
            tq = f'task_queue="{task_queue}"'
            await settles(prom, f'selfheal_incidents_total{{{tq},outcome="remediated",entry="restart-api"}}', 1)
            await settles(prom, f'selfheal_actions_total{{{tq},entry="restart-api",result="executed"}}', 1)
            await settles(prom, f'selfheal_decision_seconds_count{{{tq},decision="auto"}}', 1)
            await settles(prom, f'sum(selfheal_decision_seconds_bucket{{{tq},decision="auto",le="+Inf"}})', 1)
            # And the SDK's own, under its names.
            await settles(prom, f'temporal_workflow_completed_total{{{tq},workflow_type="IncidentWorkflow"}}', 1)
            # The governor, read at scrape time: autonomy on, then paused by a person.
            await settles(prom, 'selfheal_governor_up{job="worker"}', 1)
            await settles(prom, 'selfheal_paused{job="worker"}', 0)
            await settles(prom, 'selfheal_breaker_open{job="worker",entry="restart-api"}', 0)
            await temporal_env.client.get_workflow_handle(governor_id(task_queue)).execute_update(
                GovernorWorkflow.pause, Pause(by="alice", reason="maintenance window"))
            await settles(prom, 'selfheal_paused{job="worker"}', 1)
            await settles(prom, 'selfheal_entry_paused{job="worker",entry="restart-api"}', 1)
    finally:
        codes = [stop(p) for p in processes]
    assert codes == [0, 0], (worker_log.read_text()[-2000:], ingress_log.read_text()[-2000:])


async def test_a_worker_restarted_mid_incident_rebuilds_it_without_counting_it_twice(
        temporal_env, task_queue, tmp_path, unit, systemd_user):
    require_prometheus()
    first_at, second_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp_path / "worker.log"
    args = (temporal_env, task_queue, tmp_path, unit.name, systemd_user.ns_command_prefix)
    tq = f'task_queue="{task_queue}"'
    first = worker(*args, first_at, log)
    second = None
    try:
        with Prometheus(None, jobs={"worker": [first_at, second_at]}) as prom:
            await answering(f"http://{first_at}/metrics", first, log)
            handle = await start_incident(temporal_env.client, task_queue, alert("ApiSlow"))
            await wait_status(handle, "awaiting_approval", timeout=60)
            await settles(prom, f'selfheal_decision_seconds_count{{{tq},decision="needs_approval"}}', 1)
            assert stop(first) == 0  # a restart: the incident waits in Temporal, not in the worker

            began = time.time()
            second = worker(*args, second_at, log)
            await answering(f"http://{second_at}/metrics", second, log)
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
            record = await asyncio.wait_for(handle.result(), 120)
            assert record.outcome == "remediated", (record.outcome_detail, log.read_text()[-3000:])

            on_second = f'{tq},instance="{second_at}"'
            await settles(prom, f'selfheal_incidents_total{{{on_second},outcome="remediated"}}', 1)
            await settles(prom, f'selfheal_approval_seconds_count{{{on_second},tier="service"}}', 1)
            # The second worker rebuilt the incident from its history, decision included...
            await settles(prom, f'sum(temporal_workflow_task_replay_latency_seconds_count{{{on_second},'
                                f'workflow_type="IncidentWorkflow"}}) > bool 0', 1)
            # ...and counted it nowhere: the one decision is the first worker's.
            await settles(prom, f'sum(max_over_time(selfheal_decision_seconds_count{{{tq}}}[10m]))', 1)
            await settles(prom, f'count(max_over_time(selfheal_decision_seconds_count{{{tq}}}[10m]))', 1)
            await settles(prom, f'sum(max_over_time(selfheal_incidents_total{{{tq}}}[10m]))', 1)
            assert time.time() - began < 120
    finally:
        stop(first)
        if second is not None:
            assert stop(second) == 0, log.read_text()[-3000:]
