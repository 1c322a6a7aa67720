"""Scale out: several workers on one task queue, several ingresses on one namespace, behave as one.

Everything runs as users run it: ``selfheal worker`` and ``selfheal ingress`` processes on
the dev server, each stopped by the test by its pid. What they share is Temporal alone:

- a worker SIGKILLed while it restarts a unit leaves the restart to the other worker,
  and the unit restarts once;
- the governor's rate limit holds for incidents that ran on different workers;
- an Alertmanager storm sent to two ingresses at once opens one incident per episode,
  and each incident holds every alert of its episode, once.

A worker's identity (``last_worker_identity`` of a pending activity, ``identity`` in the
history) is the SDK's default, ``<pid>@<host>``: that is how the tests tell the workers apart.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import DescribeTaskQueueMode, PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue, TaskQueueVersionSelection
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from selfheal.contract import AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import RULES as WAITING_RULES, WHITELIST as WAITING_WHITELIST
from tests.ingress.payloads import alertmanager, body, incident, incidents_for, key, prom_alert
from tests.ingress.served import free_port
from tests.support.systemd_user import SystemdUser
from tests.workflows.helpers import FAST, alert, rules_yaml, running_worker, start_incident, wait_for, whitelist_yaml
from tests.workflows.test_metrics_prometheus import answering, selfheal_process
from tests.workflows.test_worker_process import _restart_attempts, _restart_in_flight, stop, worker_process

TOKEN = "scale-out-token"


def identity(proc: subprocess.Popen) -> str:
    """The worker's identity as Temporal records it: the SDK's default, ``<pid>@<host>``."""
    return f"{proc.pid}@{socket.gethostname()}"


def workers(temporal_env, task_queue: str, tmp: Path, whitelist: str, rules: str, prefix: list[str]) -> list[subprocess.Popen]:
    """Two ``selfheal worker`` processes on one task queue, each logging to its own file."""
    return [worker_process(temporal_env, task_queue, tmp, whitelist, rules, prefix, tmp / f"worker-{i}.log") for i in (0, 1)]


def logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp.glob("*.log")))


async def polling(client, task_queue: str, procs: list[subprocess.Popen], tmp: Path) -> None:
    """Wait until every worker polls the queue for workflow tasks and for activities.

    The plain describe reads the queue's root partition only, where a worker whose polls
    wait in another partition shows up when a poll ends, up to a minute later; the
    enhanced one reads every partition but answers from a cache some seconds old. A poller
    seen by either counts.
    """
    wanted = {identity(p) for p in procs}
    kinds = [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY]

    def request(**kw) -> DescribeTaskQueueRequest:
        return DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=task_queue), **kw)

    async def probe():
        for p in procs:
            assert p.poll() is None, f"worker {p.pid} exited with {p.returncode}:\n{logs(tmp)}"
        seen = {kind: set() for kind in kinds}
        for kind in kinds:
            described = await client.workflow_service.describe_task_queue(request(task_queue_type=kind))
            seen[kind].update(poller.identity for poller in described.pollers)
        if all(wanted <= seen[kind] for kind in kinds):
            return True
        described = await client.workflow_service.describe_task_queue(request(
            api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED, task_queue_types=kinds,
            report_pollers=True, versions=TaskQueueVersionSelection(unversioned=True)))
        for version in described.versions_info.values():
            for kind, info in version.types_info.items():
                seen.setdefault(kind, set()).update(poller.identity for poller in info.pollers)
        return all(wanted <= seen[kind] for kind in kinds)

    await wait_for(probe, timeout=60, interval=0.2)


async def identities(handle) -> set[str]:
    """Every worker that completed a workflow task or started an activity of this workflow."""
    found = set()
    for event in (await handle.fetch_history()).events:
        for attributes in ("workflow_task_completed_event_attributes", "activity_task_started_event_attributes"):
            if event.HasField(attributes):
                found.add(getattr(event, attributes).identity)
    return found


async def restart_completed_by(handle) -> str:
    """The worker that completed the incident's ``restart_unit``."""
    history = await handle.fetch_history()
    scheduled = {
        e.event_id for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "restart_unit"
    }
    [completed] = [
        e.activity_task_completed_event_attributes for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    ]
    return completed.identity


async def test_a_worker_killed_mid_restart_leaves_it_to_the_other_which_restarts_once(
        temporal_env, task_queue, tmp_path, systemd_user):
    sd, client = systemd_user, temporal_env.client
    name = f"slow-{uuid.uuid4().hex[:8]}.service"
    starts = tmp_path / "starts"
    # Each start is logged, then takes 3 s: long enough to kill the worker mid-restart.
    sd.install_unit(name, SystemdUser.simple_service(
        "while true; do echo ERROR connection pool exhausted; sleep 1; done",
        ExecStartPre=f"/bin/sh -c \"echo start >> {starts}; sleep 3\"",
    ))
    sd.wait_until(lambda: sd.journal_entries(name, grep="connection pool exhausted"), timeout=15)
    baseline = sd.show(name, "InvocationID")["InvocationID"]

    procs = workers(temporal_env, task_queue, tmp_path, whitelist_yaml(name), rules_yaml(name), sd.ns_command_prefix)
    try:
        await polling(client, task_queue, procs, tmp_path)
        handle = await start_incident(client, task_queue, alert("ApiDown"))
        await wait_for(lambda: _restart_in_flight(handle, starts), timeout=60)

        [pending] = [a for a in (await handle.describe()).raw_description.pending_activities
                     if a.activity_type.name == "restart_unit"]
        assert pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        [doomed] = [p for p in procs if identity(p) == pending.last_worker_identity]
        [survivor] = [p for p in procs if p is not doomed]
        doomed.send_signal(signal.SIGKILL)
        assert doomed.wait(timeout=10) == -signal.SIGKILL

        record: AuditRecord = await asyncio.wait_for(handle.result(), 60)
        finished_by = await restart_completed_by(handle)
        assert stop(survivor) == 0, logs(tmp_path)  # SIGTERM: a graceful exit (or the faulthandler trace)
    finally:
        for p in procs:
            stop(p)
        sd.systemctl("stop", name, check=False)

    assert record.outcome == "remediated", (record.outcome_detail, logs(tmp_path))
    assert finished_by == identity(survivor) != identity(doomed)
    assert len(starts.read_text().splitlines()) == 2  # the install, and exactly one restart
    assert record.remediation.action == "already_done"  # the survivor's retry found the work done
    assert record.remediation.before.invocation_id != baseline
    assert await _restart_attempts(handle) == 2


async def test_a_rate_limit_holds_across_workers(temporal_env, task_queue, tmp_path, systemd_user, unit):
    client, incidents = temporal_env.client, 12
    whitelist = whitelist_yaml(unit.name, max_executions=1)
    procs = workers(temporal_env, task_queue, tmp_path, whitelist, rules_yaml(unit.name), systemd_user.ns_command_prefix)
    try:
        await polling(client, task_queue, procs, tmp_path)
        # Separate alerts (each its own fingerprint), so separate incidents, all at once.
        handles = await asyncio.gather(*(start_incident(client, task_queue, alert("ApiDown")) for _ in range(incidents)))
        records: list[AuditRecord] = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
        ran_on = await asyncio.gather(*(identities(h) for h in handles))
        [executor] = [await restart_completed_by(h) for h, r in zip(handles, records) if r.outcome == "remediated"]
        codes = [stop(p) for p in procs]
    finally:
        for p in procs:
            stop(p)

    assert codes == [0, 0], logs(tmp_path)
    assert set().union(*ran_on) == {identity(p) for p in procs}, ran_on  # both workers ran these incidents
    # ... and the limit held for incidents on the worker that did not act, not only on its own.
    assert any(executor not in workers_of for workers_of, r in zip(ran_on, records) if r.outcome == "denied"), ran_on
    outcomes = sorted(r.outcome for r in records)
    assert outcomes == ["denied"] * (incidents - 1) + ["remediated"], [(r.outcome, r.outcome_detail) for r in records]
    [acted] = [r for r in records if r.outcome == "remediated"]
    assert acted.remediation.action == "executed"
    for r in records:
        if r.outcome == "denied":
            assert r.outcome_detail.startswith("[rate_limit]"), r.outcome_detail
            assert r.remediation is None
    assert unit.start_count() == 2  # the install, and the one restart the limit allows


async def test_a_storm_split_across_two_ingresses_opens_one_incident_per_episode(temporal_env, task_queue, tmp_path):
    client = temporal_env.client
    episodes, distinct, resends = 6, 4, 12  # each episode: 4 distinct alerts among 12 sends, to each ingress
    fingerprints = [uuid.uuid4().hex[:16] for _ in range(episodes)]

    def payload(fingerprint: str, n: int) -> bytes:
        a = prom_alert(fingerprint=fingerprint)
        a["annotations"] = {**a["annotations"], "sample": str(n % distinct)}
        return body(alertmanager(a))

    (tmp_path / "wl.yaml").write_text(WAITING_WHITELIST)  # the incidents wait for approval: open for signals
    (tmp_path / "rules.yaml").write_text(WAITING_RULES)
    settings = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                              diagnosis=str(tmp_path / "rules.yaml"), incident=FAST)
    ports = [free_port(), free_port()]
    address = client.service_client.config.target_host
    ingresses = [
        selfheal_process(["ingress", "--port", str(port), "--address", address, "--task-queue", task_queue],
                         {"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN": TOKEN}, tmp_path / f"ingress-{port}.log")
        for port in ports
    ]
    try:
        async with running_worker(client, settings), httpx.AsyncClient(timeout=30) as http:
            for port, proc in zip(ports, ingresses):
                await answering(f"http://127.0.0.1:{port}/healthz", proc, tmp_path / f"ingress-{port}.log")
            sends = [(port, fp, n) for n in range(resends) for fp in fingerprints for port in ports]
            answers = await asyncio.gather(*(
                http.post(f"http://127.0.0.1:{port}/v1/alerts/alertmanager", content=payload(fp, n),
                          headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                for port, fp, n in sends
            ))
            for answer in answers:
                assert answer.status_code == 202, answer.text

            expected = {fp: incident(key(f"am-{fp}")) for fp in fingerprints}
            for (port, fp, _), answer in zip(sends, answers):
                [delivered] = answer.json()["incidents"]
                assert delivered["id"] == expected[fp] and delivered["state"] in {"delivered", "already delivered"}, delivered
            # Both ingresses handed every episode to Temporal themselves: they raced on each one.
            for port in ports:
                for fp in fingerprints:
                    states = {a.json()["incidents"][0]["state"] for (p, f, _), a in zip(sends, answers) if (p, f) == (port, fp)}
                    assert "delivered" in states, (port, fp, states)

            async def one_incident_each():  # visibility is eventually consistent
                found = await asyncio.gather(*(incidents_for(client, key(f"am-{fp}")) for fp in fingerprints))
                return found == [[expected[fp]] for fp in fingerprints] or None

            await wait_for(one_incident_each, timeout=30, interval=0.2)

            async def every_alert_once():
                for fp in fingerprints:
                    record = await client.get_workflow_handle(expected[fp]).query(IncidentWorkflow.audit)
                    if sorted(a.annotations["sample"] for a in record.alerts) != [str(n) for n in range(distinct)]:
                        return None
                    assert {a.fingerprint for a in record.alerts} == {fp}
                return True

            await wait_for(every_alert_once, timeout=30, interval=0.2)
    finally:
        codes = [stop(p) for p in ingresses]
    assert codes == [0, 0], logs(tmp_path)
