"""Many open incidents: memory while 1,000 wait for approval, and time to approve them all.

Run by hand:  .venv/bin/python bench/approve_many.py [--incidents 1000] [--concurrency 32]
Needs root (the systemd --user harness of tests/support). Prints figures and exits 1 if a
target is missed: RSS of the worker process at or under 300 MB, and the time from the
first approval to the last outcome within 1.2x the baseline's.

Both phases run on one dev server, against one real unit in a systemd --user manager,
with a worker in a process of its own started the way users start it (``selfheal
worker``), so its RSS is the selfheal process's:

- baseline: 1,000 bare workflows (bench/bare.py ``BareApproval``) that wait for a signal,
  then run the same activities an approved incident runs, with the same inputs: reserve
  at the governor, read the unit, restart it, verify, notify. Signalled 32 at a time.
- incidents: 1,000 real incidents for one service-tier entry whose limits admit 1,000
  runs, each diagnosed and waiting for approval; approved 32 at a time with the same
  ``approve`` update the CLI sends.

All 1,000 share one unit and one governor: most restarts find the unit already restarted
since their own read (InvocationID changed) and report ``already_done``, in both phases
alike; the governor sees RESOURCE_EXHAUSTED (10 updates in flight) and its callers retry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.bare import BareApproval, BareApprovalInput  # noqa: E402
from selfheal import search  # noqa: E402
from selfheal.contract import (  # noqa: E402
    ActionRequest, Alert, Approval, AuditRecord, IncidentInput, Notification, RemediationInput, VerifyInput,
)
from selfheal.settings import WorkerSettings  # noqa: E402
from selfheal.whitelist import load_whitelist, target_of  # noqa: E402
from selfheal.workflows.incident import IncidentWorkflow  # noqa: E402
from selfheal.contract.governor import ReserveInput  # noqa: E402
from tests.support.systemd_user import SystemdUser  # noqa: E402

RSS_LIMIT_MB = 300
RATIO_LIMIT = 1.2
ENTRY = "restart-bench"


def whitelist(unit: str, runs: int) -> str:
    return f"""version: 1
metadata: {{reviewed_by: [bench], reviewed_at: 2026-11-26}}
tiers:  # approved by the CLI's update as a typed name: identity is not what this measures
  instance: {{approvals: 0}}
  service: {{approvals: 1, channels: [ssh, unverified]}}
  fleet: {{approvals: 2, channels: [ssh, unverified]}}
entries:
  - id: {ENTRY}
    kind: systemd.restart
    target: {{unit: {unit}, host: localhost, scope: user}}
    blast_radius: service
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: {runs}, window: 1h}}
    cooldown: 0s
    match: ['alertname="BenchSlow"']
    verify: {{timeout: 60s}}
"""


RULES = f"""
signatures:
  - id: bench
    summary: the benchmark's alert
    match: ['alertname="BenchSlow"']
    propose: {ENTRY}
"""


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def spawn_worker(env: dict[str, str], baseline: bool, log: Path) -> subprocess.Popen:
    argv = [sys.executable, __file__, "--baseline-worker"] if baseline else [sys.executable, "-m", "selfheal.cli", "worker"]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bounded(concurrency: int, jobs) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(job):
        async with sem:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def completed(client, queue: str, n: int) -> None:
    query = f'TaskQueue = "{queue}" AND ExecutionStatus = "Completed"'
    while (await client.count_workflows(query)).count < n:
        await asyncio.sleep(0.1)


async def baseline_phase(client, env, args, wl_path: Path, log: Path) -> tuple[float, float]:
    queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
    proc = spawn_worker({**env, "SELFHEAL_TASK_QUEUE": queue}, baseline=True, log=log)
    try:
        loaded = load_whitelist(wl_path)
        entry = loaded.whitelist.entry(ENTRY)
        request = ActionRequest(entry_id=ENTRY, target=target_of(entry))
        handles = []
        for i in range(args.incidents):
            wid = f"bare-{queue}-{i}"
            key = f"{wid}/act/{ENTRY}"
            inp = BareApprovalInput(
                reservation=ReserveInput(whitelist_sha256=loaded.sha256, policy=loaded.whitelist.for_entry(ENTRY),
                                         request=request, incident_id=wid, idempotency_key=key, approved_by=["alice"]),
                remediation=RemediationInput(incident_id=wid, idempotency_key=key,
                                             whitelist_sha256=loaded.sha256, request=request),
                verify=VerifyInput(incident_id=wid, request=request, timeout_seconds=60),
                note=Notification(incident_id=wid, kind="outcome", summary="bench"),
            )
            handles.append(await client.start_workflow(BareApproval.run, inp, id=wid, task_queue=queue))
        # Every workflow has run its first task and waits in the worker's cache.
        await bounded(args.concurrency, [lambda h=h: h.describe() for h in handles])
        while (await client.count_workflows(f'TaskQueue = "{queue}" AND ExecutionStatus = "Running"')).count < args.incidents:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        waiting_rss, _ = rss_mb(proc.pid)
        began = time.perf_counter()
        await bounded(args.concurrency, [lambda h=h: h.signal(BareApproval.approve) for h in handles])
        await completed(client, queue, args.incidents)
        return time.perf_counter() - began, waiting_rss
    finally:
        stop(proc)


async def incident_phase(client, env, args, log: Path) -> tuple[float, float, float, Counter]:
    queue = f"bench-inc-{uuid.uuid4().hex[:6]}"
    proc = spawn_worker({**env, "SELFHEAL_TASK_QUEUE": queue}, baseline=False, log=log)
    try:
        now = datetime.now(timezone.utc)
        handles = []
        for i in range(args.incidents):
            alert = Alert(source="bench", labels={"alertname": "BenchSlow", "service": "bench"}, starts_at=now,
                          fingerprint=f"bench-{i}")
            handles.append(await client.start_workflow(IncidentWorkflow.run, IncidentInput(alerts=[alert]),
                                                       id=f"inc-{queue}-{i}", task_queue=queue))

        # The search attribute, not a query per incident: queries wait behind a busy worker.
        query = f'TaskQueue = "{queue}" AND SelfhealStatus = "awaiting_approval"'
        while (await client.count_workflows(query)).count < args.incidents:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        waiting_rss, _ = rss_mb(proc.pid)
        began = time.perf_counter()
        await bounded(args.concurrency, [lambda h=h: h.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
                                         for h in handles])
        await completed(client, queue, args.incidents)
        elapsed = time.perf_counter() - began
        _, peak_rss = rss_mb(proc.pid)
        outcomes: Counter = Counter()

        async def outcome(h):
            record: AuditRecord = await h.result()
            outcomes[(record.outcome, record.remediation.action if record.remediation else None)] += 1

        await bounded(args.concurrency, [lambda h=h: outcome(h) for h in handles])
        return elapsed, waiting_rss, peak_rss, outcomes
    finally:
        stop(proc)


async def main() -> int:
    if sys.argv[1:] == ["--baseline-worker"]:
        from selfheal.worker import WORKFLOWS, run_worker

        settings = WorkerSettings.from_mapping(dict(os.environ))
        stop_event = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
        await run_worker(settings, stop=stop_event, workflows=[*WORKFLOWS, BareApproval])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    temporal = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), data_converter=pydantic_data_converter, ip="127.0.0.1",
        dev_server_log_level="error", search_attributes=search.ALL,
    )
    tmp = Path(tempfile.mkdtemp(prefix="approve-many-"))
    try:
        with SystemdUser() as sd:
            unit = "bench-api.service"
            # No start rate limit: a thousand approved restarts in a minute is the point here.
            text = SystemdUser.simple_service("while true; do echo serving; sleep 5; done")
            sd.install_unit(unit, text.replace("[Unit]\n", "[Unit]\nStartLimitIntervalSec=0\n"))
            (tmp / "wl.yaml").write_text(whitelist(unit, args.incidents))
            (tmp / "rules.yaml").write_text(RULES)
            env = {**os.environ, "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
                   "SELFHEAL_WHITELIST": str(tmp / "wl.yaml"), "SELFHEAL_DIAGNOSIS": str(tmp / "rules.yaml"),
                   "SELFHEAL_COMMAND_PREFIX": shlex.join(sd.ns_command_prefix)}
            log = tmp / "workers.log"
            print(f"{args.incidents} incidents on one unit and one governor, approved {args.concurrency} at a time, "
                  f"{args.rounds} round(s); each round runs both phases, in alternating order")
            bases, tooks, peaks = [], [], []
            for r in range(args.rounds):
                for phase in (("baseline", "incidents") if r % 2 == 0 else ("incidents", "baseline")):
                    if phase == "baseline":
                        base, base_rss = await baseline_phase(temporal.client, env, args, tmp / "wl.yaml", log)
                        bases.append(base)
                        print(f"round {r + 1} baseline  {args.incidents} bare workflows, signal -> same activities: "
                              f"{base:6.1f} s (worker RSS while waiting {base_rss:5.0f} MB)")
                    else:
                        took, rss, peak, outcomes = await incident_phase(temporal.client, env, args, log)
                        tooks.append(took)
                        peaks.append(peak)
                        print(f"round {r + 1} incidents {args.incidents} approved -> outcome:                    "
                              f"{took:6.1f} s (worker RSS while waiting {rss:5.0f} MB, peak {peak:5.0f} MB)")
                        print("  outcomes: " + ", ".join(f"{o} ({a}) x{n}" for (o, a), n in outcomes.most_common()))
            ratio = statistics.median(tooks) / statistics.median(bases)
            print(f"median ratio incidents/baseline: {ratio:.2f}x (target <= {RATIO_LIMIT}x); "
                  f"peak RSS {max(peaks):.0f} MB (target <= {RSS_LIMIT_MB} MB)")
            return 0 if ratio <= RATIO_LIMIT and max(peaks) <= RSS_LIMIT_MB else 1
    finally:
        await temporal.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
