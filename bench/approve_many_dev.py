"""1,000 incidents waiting for approval under ``selfheal dev`` (issue 21): the dev process's
memory, the time to approve them all with signed approvals, and reads beside decisions.

Run by hand, never in CI (about 20 minutes with the defaults; no root needed):

    .venv/bin/python bench/approve_many_dev.py [--incidents 1000] [--concurrency 32] [--rounds 2] [--query-batch 200]

All on loopback, on free ports, in one ``selfheal dev`` (the process a new user runs: its
Temporal dev server on a SQLite file, the AWS simulation, the worker and the ingress):

1. A whitelist of one ``ecs.rollback`` entry per batch of incidents, all alike: service tier
   (one approval, signed), the demo's checkout service in the simulation pinned to
   ``checkout:6``, limits that admit the batch (``max_executions`` is at most 1,000, hence
   an entry per batch), cooldown 0. Diagnosis rules propose it for the batch's alert.
   ``selfheal dev`` adds the demo approvers' SSH keys (DATA/keys/alice_ed25519).
2. Per round, in alternating order:
   - incidents: the service is put back on the bad revision; N distinct alerts (one episode
     each) posted through the ingress, 50 per request; once all N incidents wait for
     approval, the dev process's RSS (VmRSS, /proc). Then N approvals signed as the CLI
     signs them (``selfheal approve --key``: the ``audit`` query, ``attest.new_statement``,
     ``attest.sign_ssh``), in this process, before the clock starts (a statement is valid
     for 10 minutes); sent 32 at a time as the CLI's ``approve`` update. Measured: the
     first approval sent -> the last incident closed (its close event), and the peak RSS
     (VmHWM).
   - baseline: N bare workflows (bench/bare_aws.py) that wait for a signal and then run
     the same activities with the same inputs (reserve at the entry governor, read the
     service, roll back, verify, notify), on their own task queue of the same dev server,
     served by ``selfheal.worker.run_worker`` in this process (the same activities and
     worker options as dev's, whose worker stays idle meanwhile); signalled 32 at a time.
3. Reads beside decisions (``--query-batch B``, 0 skips it): two more batches of B
   incidents, approved the same way; the second while 8 readers in this process read, as
   ``selfheal show`` does (describe; a running incident's ``audit`` query, answered by the
   worker; a closed one's result, from the server), the batch's incidents interleaved with
   the last round's, round and round, until the batch is done. Compared: approval update
   round trip, approval -> executor started, and ``reserve_action`` (scheduled ->
   completed), without and with the reads; and the reads' own latency.

Also reported: CPU seconds of the dev process, its Temporal server and this process while
each phase acts; every governor's runs, history size and longest workflow task; activity
attempts the workers logged as failed, with the exception.

Every process it starts is stopped by its own pid (bench/fleet_storm.py ``Dev``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bare_aws import BareAwsApproval, BareAwsApprovalInput  # noqa: E402
from fleet_storm import (  # noqa: E402
    ACCOUNT, AWS_CREDENTIALS, REGION, Dev, Source, activity_starts, completed_result, descendants, gather_limited,
    governor_histories, in_process_worker, pct, ts,
)

from selfheal import connection  # noqa: E402
from selfheal.identity import attest
from selfheal.contract import ActionRequest, Approval, AuditRecord, Notification, RemediationInput, VerifyInput  # noqa: E402
from selfheal.whitelist import load_whitelist, target_of  # noqa: E402
from selfheal.contract.governor import ReserveInput  # noqa: E402

RSS_LIMIT_MB = 300
RATIO_LIMIT = 1.2
CLUSTER, SERVICE, PINNED, BAD = "demo", "checkout", "checkout:6", "checkout:7"  # the demo world's (selfheal/dev/aws_sim.py)
EXECUTOR = "rollback_ecs_service"
VERIFY_SECONDS = 120
TASK_QUEUE = "selfheal"  # dev's
ALERTS_PER_POST = 50
READERS = 8


# --- the whitelist -----------------------------------------------------------------------

def entry_id(tag: str) -> str:
    return f"rollback-bench-{tag}"


def alertname(tag: str) -> str:
    return f"BenchCheckoutErrors{tag.upper().replace('-', '')}"


def write_config(out: Path, tags: list[str], per_batch: int) -> tuple[Path, Path]:
    entries = [{
        "id": entry_id(tag), "kind": "ecs.rollback",
        "description": f"Roll checkout back to its pinned revision (benchmark batch {tag}).",
        "target": {"cluster": CLUSTER, "service": SERVICE, "task_definition": PINNED, "region": REGION, "account": ACCOUNT},
        "blast_radius": "service", "approvers": {"groups": ["sre"]},
        "rate_limit": {"max_executions": per_batch, "window": "1h"}, "cooldown": "0s",
        "match": [f'alertname="{alertname(tag)}"'], "verify": {"timeout": f"{VERIFY_SECONDS}s"},
    } for tag in tags]
    whitelist = {
        "version": 1,
        "metadata": {"reviewed_by": ["alice", "bob"], "reviewed_at": "2026-12-06",
                     "description": "approve_many_dev benchmark: one service-tier ecs.rollback entry per batch."},
        "tiers": {"instance": {"approvals": 0}, "service": {"approvals": 1}, "fleet": {"approvals": 2}, "region": {"approvals": 2}},
        "groups": {"sre": ["alice", "bob"]},
        "entries": entries,
    }
    rules = {"signatures": [{"id": f"bench-{tag}", "summary": "checkout errors after a deploy (benchmark)",
                             "match": [f'alertname="{alertname(tag)}"'], "propose": entry_id(tag), "confidence": 0.6}
                            for tag in tags]}
    wl, rl = out / "bench-whitelist.yaml", out / "bench-diagnosis.yaml"
    wl.write_text("# Generated by bench/approve_many_dev.py\n" + yaml.safe_dump(whitelist, sort_keys=False, width=200))
    rl.write_text("# Generated by bench/approve_many_dev.py\n" + yaml.safe_dump(rules, sort_keys=False, width=200))
    return wl, rl


# --- the world and the process -----------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds used while it runs by the selfheal dev process, its Temporal server, and this process."""

    def __init__(self, dev: Dev):
        server = [p for p in descendants(dev.proc.pid) if b"start-dev" in Path(f"/proc/{p}/cmdline").read_bytes()]
        self.pids = {"selfheal dev": dev.proc.pid, "temporal server": server[0] if server else None, "this process": os.getpid()}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items() if pid is not None}

    def used(self) -> dict[str, float]:
        return {name: v - self.start[name] for name, v in self._read().items()}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB (VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def put_back_bad_revision(aws_url: str) -> None:
    """So that each batch's first action rolls back for real and the rest find it done."""
    import boto3

    ecs = boto3.session.Session(region_name=REGION, **AWS_CREDENTIALS).client("ecs", endpoint_url=aws_url)
    ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=BAD)


# --- Temporal helpers --------------------------------------------------------------------

async def bounded(concurrency: int, jobs) -> list:
    return await gather_limited(concurrency, (job() for job in jobs))


async def wait_count(client: Client, query: str, n: int, timeout: float, every: float = 0.5) -> int:
    deadline = time.monotonic() + timeout
    while (count := (await client.count_workflows(query)).count) < n and time.monotonic() < deadline:
        await asyncio.sleep(every)
    return count


async def status_counts(client: Client, ids: list[str]) -> Counter:
    """What the incidents say they are doing (for a phase that did not settle)."""
    async def one(wid: str) -> str:
        try:
            return (await client.get_workflow_handle(wid).query("status", result_type=str))[:60]
        except Exception as exc:  # noqa: BLE001 - reported
            return type(exc).__name__

    return Counter(await bounded(16, [lambda w=w: one(w) for w in ids[:200]]))


def activity_span(events, name: str) -> float | None:
    """Scheduled -> completed of the first ``name`` activity, in seconds."""
    scheduled = {e.event_id: ts(e) for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name == name}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            at = scheduled.get(e.activity_task_completed_event_attributes.scheduled_event_id)
            if at is not None:
                return ts(e) - at
    return None


APPROVED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED  # an incident's approve update
SIGNALLED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED  # a bare workflow's approve signal


async def after_go(client: Client, ids: list[str], began: float, go_event) -> dict:
    """From the histories: ``began`` -> the last close, outcomes, and per workflow the
    approval (``go_event``) -> executor started, and ``reserve_action`` scheduled -> completed."""
    histories = await gather_limited(16, (client.get_workflow_handle(w).fetch_history() for w in ids))
    closed, to_exec, reserve, outcomes = [], [], [], Counter()
    for history in histories:
        events = list(history.events)
        close, result = completed_result(events)
        if close == "completed":
            closed.append(ts(events[-1]))
            action = ((result or {}).get("remediation") or {}).get("action") if isinstance(result, dict) else result
            outcomes[f"{result.get('outcome') if isinstance(result, dict) else 'done'} ({action})"] += 1
        else:
            outcomes[close] += 1
        go = next((ts(e) for e in events if e.event_type == go_event), None)
        started = activity_starts(events).get(EXECUTOR)
        if go is not None and started:
            to_exec.append(started[0] - go)
        if (span := activity_span(events, "reserve_action")) is not None:
            reserve.append(span)
    return {"closed": len(closed), "first_go_to_last_outcome_s": (max(closed) - began) if closed else None,
            "outcomes": dict(outcomes), "go_to_executor": summary(to_exec), "reserve_action": summary(reserve)}


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "max": max(values, default=None)}


# --- incidents ---------------------------------------------------------------------------

async def post_alerts(dev: Dev, tag: str, n: int) -> tuple[list[str], Counter]:
    """N distinct alerts (each its own fingerprint: its own incident) through the ingress."""
    run, now = uuid.uuid4().hex[:6], datetime.now(timezone.utc).isoformat()
    alerts = [{"labels": {"alertname": alertname(tag), "service": SERVICE, "severity": "page", "replica": str(i)},
               "annotations": {"summary": "checkout 5xx above 5% since the last deploy"},
               "fingerprint": f"bench-{tag}-{run}-{i:04d}", "starts_at": now} for i in range(n)]
    ids, states = [], Counter()

    async def post(http: httpx.AsyncClient, chunk: list[dict]) -> None:
        for attempt in range(5):
            r = await http.post(f"{dev.ingress_url}/v1/alerts/generic", json={"alerts": chunk},
                                headers={"Authorization": f"Bearer {dev.token}"})
            if r.status_code == 202:
                for inc in r.json()["incidents"]:
                    ids.append(inc["id"])
                    states[inc["state"]] += 1
                return
            states[str(r.status_code)] += 1
            await asyncio.sleep(0.5 * (attempt + 1))

    async with httpx.AsyncClient(timeout=60) as http:
        chunks = [alerts[i:i + ALERTS_PER_POST] for i in range(0, n, ALERTS_PER_POST)]
        await bounded(4, [lambda c=c: post(http, c) for c in chunks])
    return ids, states


async def read_audits(client: Client, ids: list[str], concurrency: int = 16) -> tuple[dict[str, AuditRecord], float]:
    """The ``audit`` query of each incident (what ``selfheal approve`` reads before signing)."""
    t0 = time.perf_counter()
    records = await bounded(concurrency, [lambda w=w: client.get_workflow_handle(w).query("audit", result_type=AuditRecord)
                                          for w in ids])
    return dict(zip(ids, records)), time.perf_counter() - t0


def sign_approval(incident_id: str, record: AuditRecord, key: Path) -> Approval:
    """As ``selfheal approve INCIDENT --as alice --key KEY`` signs (selfheal/cli_incidents.py ``_signed``)."""
    statement = attest.new_statement(
        action="approve", subject=incident_id, entry=record.decision.entry_id, target=record.request.target,
        decision=attest.decision_digest(record.decision), person="alice", channel="ssh", confirm=None)
    data = statement.canonical()
    return Approval(approver="alice", comment="", confirm=None, channel="ssh", statement=data.decode(),
                    signature=attest.sign_ssh(data, str(key)))


async def sign_all(records: dict[str, AuditRecord], key: Path) -> tuple[dict[str, Approval], float]:
    t0 = time.perf_counter()
    signed = await bounded(2, [lambda w=w, r=r: asyncio.to_thread(sign_approval, w, r, key) for w, r in records.items()])
    return dict(zip(records, signed)), time.perf_counter() - t0


async def approve_all(client: Client, approvals: dict[str, Approval], concurrency: int) -> tuple[float, list[float], Counter]:
    """Send the ``approve`` updates ``concurrency`` at a time: (first sent, round trips, refusals)."""
    round_trips, refusals = [], Counter()

    async def one(wid: str, approval: Approval) -> None:
        t = time.perf_counter()
        try:
            await client.get_workflow_handle(wid).execute_update("approve", approval, result_type=str)
            round_trips.append(time.perf_counter() - t)
        except WorkflowUpdateFailedError as exc:
            refusals[str(getattr(exc.cause, "message", exc.cause))[:120]] += 1
        except Exception as exc:  # noqa: BLE001 - an RPC error, reported
            refusals[f"{type(exc).__name__}: {exc}"[:120]] += 1

    began = time.time()
    await bounded(concurrency, [lambda w=w, a=a: one(w, a) for w, a in approvals.items()])
    return began, round_trips, refusals


async def incident_batch(client: Client, dev: Dev, key: Path, tag: str, n: int, args, readers=None) -> dict:
    """N incidents of the batch's entry: waiting, signed, approved; ``readers`` (``show_reader``)
    reads while they are approved."""
    put_back_bad_revision(dev.aws_url)
    done_query = f'TaskQueue = "{TASK_QUEUE}" AND WorkflowType = "IncidentWorkflow" AND ExecutionStatus != "Running"'
    done_before = (await client.count_workflows(done_query)).count
    idle_rss, _ = rss_mb(dev.proc.pid)
    t0 = time.perf_counter()
    ids, states = await post_alerts(dev, tag, n)
    posted_s = time.perf_counter() - t0
    waiting_query = f'TaskQueue = "{TASK_QUEUE}" AND ExecutionStatus = "Running" AND SelfhealStatus = "awaiting_approval"'
    waiting = await wait_count(client, waiting_query, n, args.settle_timeout)
    res = {"tag": tag, "incidents": len(ids), "post_states": dict(states), "posted_s": posted_s, "waiting": waiting,
           "all_waiting_s": time.perf_counter() - t0, "dev_rss_before_mb": idle_rss}
    if waiting < n:
        res["not_waiting_statuses"] = dict(await status_counts(client, ids))
        return res
    await asyncio.sleep(3)  # the last ones finish notifying approval_requested
    res["dev_rss_waiting_mb"], _ = rss_mb(dev.proc.pid)
    records, res["audit_queries_s"] = await read_audits(client, ids)
    approvals, res["signing_s"] = await sign_all(records, key)
    stop_reading = readers(ids) if readers else None
    cpu = CpuMeter(dev)
    began, round_trips, refusals = await approve_all(client, approvals, args.concurrency)
    res["approvals_sent_s"] = time.time() - began
    res["closed_seen"] = await wait_count(client, done_query, done_before + n, args.settle_timeout, every=0.2)
    res["cpu_s"] = cpu.used()
    res["reads"] = await stop_reading() if stop_reading else None
    res["dev_rss_after_mb"], res["dev_rss_peak_mb"] = rss_mb(dev.proc.pid)
    res["update_round_trip"], res["refusals"] = summary(round_trips), dict(refusals)
    res.update(await after_go(client, ids, began, APPROVED))
    res["ids"] = ids
    return res


# --- the baseline ------------------------------------------------------------------------

def bare_input(loaded, tag: str, wid: str) -> BareAwsApprovalInput:
    entry = loaded.whitelist.entry(entry_id(tag))
    request = ActionRequest(entry_id=entry.id, target=target_of(entry))
    key = f"{wid}/act/{entry.id}"
    return BareAwsApprovalInput(
        executor=EXECUTOR,
        reservation=ReserveInput(whitelist_sha256=loaded.sha256, policy=loaded.whitelist.for_entry(entry.id), request=request,
                                 incident_id=wid, idempotency_key=key, approved_by=["alice"]),
        remediation=RemediationInput(incident_id=wid, idempotency_key=key, whitelist_sha256=loaded.sha256, request=request),
        verify=VerifyInput(incident_id=wid, request=request, timeout_seconds=VERIFY_SECONDS),
        note=Notification(incident_id=wid, kind="outcome", summary="bench"),
    )


async def baseline_batch(client: Client, dev: Dev, rules: Path, tag: str, n: int, args) -> dict:
    """N bare workflows on their own task queue, served by selfheal's worker code in this process."""
    failures = FailedAttempts()
    logging.getLogger("temporalio").addHandler(failures)
    try:
        res = await _baseline_batch(client, dev, rules, tag, n, args)
    finally:
        logging.getLogger("temporalio").removeHandler(failures)
    return {**res, "failed_attempts": dict(failures.found)}


async def _baseline_batch(client: Client, dev: Dev, rules: Path, tag: str, n: int, args) -> dict:
    async with in_process_worker(dev, rules, [BareAwsApproval]) as queue:
        put_back_bad_revision(dev.aws_url)
        loaded = load_whitelist(dev.data / "whitelist.yaml")  # dev's copy, with the approvers' keys: the same hash
        ids = [f"bare-{queue}-{i:04d}" for i in range(n)]
        await bounded(args.concurrency, [lambda w=w: client.start_workflow(BareAwsApproval.run, bare_input(loaded, tag, w), id=w,
                                                                           task_queue=queue) for w in ids])

        async def waits(wid: str) -> None:  # its first workflow task ran: it waits, cached or in history
            while not any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                          for e in (await client.get_workflow_handle(wid).fetch_history()).events):
                await asyncio.sleep(0.5)

        await bounded(args.concurrency, [lambda w=w: waits(w) for w in ids])
        await asyncio.sleep(3)
        cpu = CpuMeter(dev)
        began = time.time()
        await bounded(args.concurrency, [lambda w=w: client.get_workflow_handle(w).signal(BareAwsApproval.approve) for w in ids])
        res = {"tag": tag, "workflows": n, "signals_sent_s": time.time() - began}
        done_query = f'TaskQueue = "{queue}" AND WorkflowType = "BareAwsApproval" AND ExecutionStatus != "Running"'
        res["closed_seen"] = await wait_count(client, done_query, n, args.settle_timeout, every=0.2)
        res["cpu_s"] = cpu.used()
    res.update(await after_go(client, ids, began, SIGNALLED))
    return res


# --- reads beside decisions --------------------------------------------------------------

async def show(client: Client, wid: str) -> str:
    """What ``selfheal show`` reads: a closed incident's result (history, from the server), a
    running one's ``audit`` query (answered by the worker)."""
    handle = client.get_workflow_handle(wid, result_type=AuditRecord)
    if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
        await handle.result()
        return "closed"
    await handle.query("audit", result_type=AuditRecord)
    return "open"


def show_reader(client: Client, earlier: list[str]):
    """``start(ids)`` starts READERS readers that ``show`` the incidents ``ids`` (the batch
    being approved) interleaved with ``earlier`` ones, round and round; it returns a
    function that stops them and says how many reads of each kind, and how long they took."""

    def start(ids: list[str]):
        order = [w for pair in zip(ids, earlier) for w in pair] + ids[len(earlier):] + earlier[len(ids):]
        latencies: dict[str, list[float]] = {"open": [], "closed": []}
        errors, stop, t0 = Counter(), asyncio.Event(), time.perf_counter()

        async def reader(k: int) -> None:
            i = k
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    kind = await show(client, order[i % len(order)])
                    latencies[kind].append(time.perf_counter() - t)
                except Exception as exc:  # noqa: BLE001 - reported
                    errors[type(exc).__name__] += 1
                i += READERS

        tasks = [asyncio.create_task(reader(k)) for k in range(READERS)]

        async def finish() -> dict:
            stop.set()
            await asyncio.gather(*tasks)
            took = time.perf_counter() - t0
            reads = sum(len(v) for v in latencies.values())
            return {"reads": reads, "over_s": took, "per_s": reads / took, "errors": dict(errors), "ids": len(order),
                    **{kind: summary(v) for kind, v in latencies.items()}}

        return finish

    return start


# --- what went wrong, and the governors ----------------------------------------------------

FAILED = re.compile(r"Completing activity as failed .*'activity_type': '(\w+)'")


def failed_attempts(log: Path) -> Counter:
    """Activity attempts a worker logged as failed (dev's stderr): (type, the exception's last line)."""
    found, current, last = Counter(), None, ""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines + ["<end>"]:
        m = FAILED.search(line)
        if m or line == "<end>" or re.match(r"\d{4}-\d\d-\d\d", line):
            if current:
                found[f"{current}: {last[:100]}"] += 1
            current, last = (m.group(1) if m else None), ""
        elif current and line and not line[0].isspace() and not line.startswith(("Traceback", "During handling")):
            last = line
    return found


class FailedAttempts(logging.Handler):
    """The same, for the worker in this process (the baselines): the SDK's log records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        m = FAILED.search(record.getMessage())
        if m:
            exc = record.exc_info[1] if record.exc_info else None
            self.found[f"{m.group(1)}: {type(exc).__name__ if exc else '?'}: {exc}"[:140]] += 1


async def governor_summary(client: Client) -> dict[str, dict]:
    """Per governor workflow (every run): runs, events, history MB, the largest start event
    (the state carried across continue-as-new), the longest workflow task and how many took over 1 s."""
    out: dict[str, dict] = {}
    for (wid, _), events in (await governor_histories(client)).items():
        g = out.setdefault(wid, {"runs": 0, "events": 0, "mb": 0.0, "largest_start_kb": 0.0, "longest_task_s": 0.0,
                                 "tasks_over_1s": 0})
        g["runs"] += 1
        g["events"] += len(events)
        g["mb"] += sum(e.ByteSize() for e in events) / 1e6
        g["largest_start_kb"] = max(g["largest_start_kb"], events[0].ByteSize() / 1e3 if events else 0)
        started = {}
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                started[e.event_id] = ts(e)
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                took = ts(e) - started.get(e.workflow_task_completed_event_attributes.started_event_id, ts(e))
                g["longest_task_s"] = max(g["longest_task_s"], took)
                g["tasks_over_1s"] += took > 1
    return out


# --- main --------------------------------------------------------------------------------

def ms(v) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def sec(v) -> str:
    return "n/a" if v is None else f"{v:.1f} s"


def cpu_line(phase: dict) -> str:
    return ", ".join(f"{name} {v:.1f}" for name, v in phase.get("cpu_s", {}).items())


def round_ratio(r: dict) -> float | None:
    """A round's first approval -> last outcome against its baseline's first signal -> last outcome."""
    inc, base = r["incidents"], r["baseline"]
    if "dev_rss_waiting_mb" not in inc or not inc.get("first_go_to_last_outcome_s") or not base.get("first_go_to_last_outcome_s"):
        return None
    return inc["first_go_to_last_outcome_s"] / base["first_go_to_last_outcome_s"]


def report(res: dict) -> str:
    n = res["incidents"]
    lines = [f"approve_many_dev: {n} incidents waiting under selfheal dev, approved {res['concurrency']} at a time with "
             f"SSH-signed approvals; commit {res['commit']}, {res['date']}"]
    ratios = []
    for r in res["rounds"]:
        inc, base = r["incidents"], r["baseline"]
        if "dev_rss_waiting_mb" not in inc:
            lines.append(f"  round {r['round']}: only {inc['waiting']}/{n} incidents waiting after {sec(inc['all_waiting_s'])}; "
                         f"statuses {inc.get('not_waiting_statuses')}; posts {inc['post_states']}")
            continue
        ratio = round_ratio(r)
        ratios.append(ratio)
        lines += [
            f"  round {r['round']} ({' then '.join(r['order'])}):",
            f"    incidents: {inc['incidents']} posted in {sec(inc['posted_s'])} ({inc['post_states']}), all waiting after "
            f"{sec(inc['all_waiting_s'])}; dev RSS {inc['dev_rss_before_mb']:.0f} MB before, {inc['dev_rss_waiting_mb']:.0f} MB "
            f"waiting, peak {inc['dev_rss_peak_mb']:.0f} MB, {inc.get('dev_rss_after_mb', 0):.0f} MB after",
            f"      {n} audit queries (a status read of every waiting incident) {sec(inc['audit_queries_s'])}; "
            f"{n} ssh-keygen signatures {sec(inc['signing_s'])} (before the clock)",
            f"      first approval -> last outcome {sec(inc['first_go_to_last_outcome_s'])} ({inc['closed']} closed; updates sent "
            f"within {sec(inc['approvals_sent_s'])}, round trip p50 {ms(inc['update_round_trip']['p50'])}); "
            f"refused {inc['refusals'] or 'none'}",
            f"      outcomes {inc['outcomes']}",
            f"    baseline: first signal -> last outcome {sec(base['first_go_to_last_outcome_s'])} ({base['closed']} closed); "
            f"outcomes {base['outcomes']}",
            f"    CPU seconds from the first approval to the last outcome: incidents {cpu_line(inc)}; baseline {cpu_line(base)}",
            f"    ratio {'n/a' if ratio is None else f'{ratio:.2f}x'}; approval -> executor p50 {ms(inc['go_to_executor']['p50'])} "
            f"vs {ms(base['go_to_executor']['p50'])}, reserve_action p50 {ms(inc['reserve_action']['p50'])} vs "
            f"{ms(base['reserve_action']['p50'])}",
        ]
    rounds = [r["incidents"] for r in res["rounds"] if "dev_rss_waiting_mb" in r["incidents"]]
    if rounds:
        waiting, peak = max(i["dev_rss_waiting_mb"] for i in rounds), max(i["dev_rss_peak_mb"] for i in rounds)
        median_ratio = statistics.median(r for r in ratios if r is not None) if any(r is not None for r in ratios) else None
        lines.append(f"  dev RSS waiting {waiting:.0f} MB (target <= {RSS_LIMIT_MB} MB), peak {peak:.0f} MB; median ratio "
                     f"{'n/a' if median_ratio is None else f'{median_ratio:.2f}x'} (target <= {RATIO_LIMIT}x)")
    q = res.get("reads")
    if q:
        rd = q["reading"].get("reads") or {}
        lines.append(f"  reads beside decisions: two batches of {q['quiet']['incidents']}; the second approved while {READERS} "
                     f"readers ran `selfheal show` reads (describe, then the audit query of a running incident or the "
                     f"result of a closed one) over it and the last round's incidents, interleaved")
        for label, b in (("quiet", q["quiet"]), ("reading", q["reading"])):
            if "go_to_executor" not in b:
                lines.append(f"    {label}: only {b['waiting']} waiting; statuses {b.get('not_waiting_statuses')}")
                continue
            lines.append(f"    {label:7}: first approval -> last outcome {sec(b['first_go_to_last_outcome_s'])}; update round trip p50 "
                         f"{ms(b['update_round_trip']['p50'])} p95 {ms(b['update_round_trip']['p95'])}; approval -> executor p50 "
                         f"{ms(b['go_to_executor']['p50'])} p95 {ms(b['go_to_executor']['p95'])}; reserve_action p50 "
                         f"{ms(b['reserve_action']['p50'])} p95 {ms(b['reserve_action']['p95'])}; refused {b['refusals'] or 'none'}")
        if rd:
            lines.append(f"    reads: {rd['reads']} in {sec(rd['over_s'])} ({rd['per_s']:.0f}/s); errors {rd['errors'] or 'none'}; "
                         + "; ".join(f"{kind} {rd[kind]['n']}, p50 {ms(rd[kind]['p50'])} p95 {ms(rd[kind]['p95'])} max "
                                     f"{ms(rd[kind]['max'])}" for kind in ("open", "closed")))
    for wid, g in sorted(res.get("governors", {}).items()):
        lines.append(f"  {wid}: {g['runs']} runs, {g['events']} events, {g['mb']:.2f} MB; largest start event "
                     f"{g['largest_start_kb']:.0f} KB; longest workflow task {g['longest_task_s']:.2f} s, {g['tasks_over_1s']} over 1 s")
    for r in res["rounds"]:
        for attempt, count in (r["baseline"].get("failed_attempts") or {}).items():
            lines.append(f"  round {r['round']} baseline worker (this process): failed attempt x{count}: {attempt}")
    for attempt, count in (res.get("dev_failed_attempts") or {}).items():
        lines.append(f"  selfheal dev worker: failed attempt x{count}: {attempt}")
    if res.get("dev_exit") not in (0, None):
        lines.append(f"  selfheal dev exited with {res['dev_exit']} after SIGINT (-9: killed after the timeout)")
    for label, f in res.get("dev_log", {}).items():
        lines.append(f"  dev log: {label}: {f['count']} lines, {f['first']} .. {f['last']}")
    return "\n".join(lines)


async def run(args, tmp: Path) -> dict:
    source = Source.working_tree()
    tags = [f"r{r + 1}" for r in range(args.rounds)] + (["q-quiet", "q-reading"] if args.query_batch else [])
    wl, rules = write_config(tmp, tags, max(args.incidents, args.query_batch))
    dev = Dev(tmp / "devdata", wl, rules, source)
    res = {"incidents": args.incidents, "concurrency": args.concurrency, "commit": source.describe,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rounds": []}
    try:
        dev.wait_ready()
        key = dev.data / "keys" / "alice_ed25519"
        client = await connection.connect(connection.from_address(dev.temporal))
        print(f"[approve_many_dev] dev ready at {dev.temporal} (pid {dev.proc.pid})", file=sys.stderr)
        for r in range(args.rounds):
            tag = f"r{r + 1}"
            order = ("baseline", "incidents") if r % 2 == 0 else ("incidents", "baseline")
            rnd = {"round": r + 1, "order": order}
            for phase in order:
                print(f"[approve_many_dev] round {r + 1}: {phase}", file=sys.stderr)
                rnd[phase] = (await baseline_batch(client, dev, rules, tag, args.incidents, args) if phase == "baseline"
                              else await incident_batch(client, dev, key, tag, args.incidents, args))
            res["rounds"].append(rnd)
        if args.query_batch:
            print("[approve_many_dev] reads beside decisions", file=sys.stderr)
            quiet = await incident_batch(client, dev, key, "q-quiet", args.query_batch, args)
            earlier = [w for r in res["rounds"] for w in r["incidents"].get("ids", [])] + quiet.get("ids", [])
            reading = await incident_batch(client, dev, key, "q-reading", args.query_batch, args,
                                           readers=show_reader(client, earlier[-args.incidents:]))
            res["reads"] = {"quiet": quiet, "reading": reading}
        res["governors"] = await governor_summary(client)
    finally:
        res["dev_exit"] = dev.stop()
        res["dev_log"] = dev.findings()
        res["dev_failed_attempts"] = dict(failed_attempts(dev.data.parent / "dev.err"))
        if res["dev_exit"] not in (0, None):
            print(f"[approve_many_dev] selfheal dev exited with {res['dev_exit']}; stderr tail:\n{dev.err_tail()}", file=sys.stderr)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="approvals (and signals) in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both phases, in alternating order")
    parser.add_argument("--query-batch", type=int, default=200, help="incidents per batch of the reads phase (0: skip it)")
    parser.add_argument("--settle-timeout", type=float, default=1200, help="seconds to wait for all to wait, or all to close")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (printed)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not 0 < args.incidents <= 1000 or not 0 <= args.query_batch <= 1000:
        parser.error("an entry admits at most 1,000 executions an hour: --incidents and --query-batch at most 1000")
    tmp = Path(tempfile.mkdtemp(prefix="approve-many-dev-"))
    try:
        res = asyncio.run(run(args, tmp))
    finally:
        if args.keep:
            print(f"[approve_many_dev] data kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for r in res["rounds"]:
        r["incidents"].pop("ids", None)
    for b in (res.get("reads") or {}).values():
        if isinstance(b, dict):
            b.pop("ids", None)
    print(json.dumps(res, indent=2, default=str) if args.json else report(res))
    # The targets: at most 300 MB with the 1,000 waiting (the peak while acting is
    # reported, not a target), and the median ratio at most 1.2x.
    rounds = [r for r in res["rounds"] if "dev_rss_waiting_mb" in r["incidents"]]
    ratios = [x for x in map(round_ratio, res["rounds"]) if x is not None]
    ok = (bool(rounds) and max(r["incidents"]["dev_rss_waiting_mb"] for r in rounds) <= RSS_LIMIT_MB
          and bool(ratios) and statistics.median(ratios) <= RATIO_LIMIT)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
