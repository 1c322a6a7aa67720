"""Fleet storm (issue 21): N services alert at once, each healed by its own automatic entry.

Run by hand, never in CI (it takes minutes):

    .venv/bin/python bench/fleet_storm.py [--n 200] [--entries 500] [--rounds 1] [--keep] [--json] [--ref HEAD]
    .venv/bin/python bench/fleet_storm.py --n 20 --entries 60 --sequential 20

``--sequential K`` measures one incident on a quiet machine instead of the storm (issue 21):
K services alert one after the other, each posted once the previous incident's executor
started (``--gap S``: and S seconds more); it reports the median and p90 of alert ->
executor started, against two baselines of K bare workflows started the same way, each
measured before and after on the same dev server: the same activities with the same inputs
(bench/bare_aws.py ``BareAwsAutomatic``, served by selfheal's worker code in this process on
a task queue of its own: the issue's target, at most 1.2x), and no-op activities
(bench/fleet_bare.py); the ratios of the medians, and where the time went (history).
Steps 1-3 and 7 below are the same.

What it does, all on loopback, on free ports:

1. Writes a whitelist of ``--entries`` entries: one ``ec2.reboot`` entry per service
   (``reboot-svc-NNNN``, blast radius ``instance``, so 0 approvals in the default tiers; its
   target is the tag selector ``Service=svc-NNNN, Fleet=storm``, unique per service), the demo's
   own entries, and plausible entries of every other kind that no alert matches. Diagnosis
   rules propose each service's entry for its alert. Checks the whitelist with
   ``selfheal whitelist check``.
2. Starts ``selfheal dev`` as a subprocess (the process a user runs) with a temp data dir,
   the generated files and free ports; reads the token and URLs from what it prints.
3. Seeds the AWS simulation dev started (moto) with N instances, one per service, tagged
   for its entry.
4. Baseline, before the storm: N bare workflows (``bench/fleet_bare.py``) on their own task
   queue, served by a worker in this process on the same dev server, each running as many
   sequential no-op activities as an incident of this kind runs durable steps, started at
   once.
5. The storm: N alerts (one per service, naming its instance) posted concurrently to the
   generic ingress endpoint. Waits for every incident's outcome and reads its history: alert
   post -> the executor activity (``reboot_instances``) started.
6. The baseline again; the median of the two is the one the ratio uses. Each baseline
   also runs N bare workflows of the incident's own activities with the same inputs
   (bench/bare_aws.py ``BareAwsAutomatic``, all at once, served by selfheal's worker code in
   this process on a task queue of its own, so entry governors of their own): the second
   ratio, storm / same activities, is what selfheal's workflows add over the same work
   (the simulated AWS and the governors' updates run on the same cores in both). And N
   more with a no-op step in the governor's place (``noop_queue``), the "world only": the
   third ratio, storm / world only, is all that selfheal adds (its workflows and its
   governors) over the AWS work, the policy's load and the diagnosis the incident does.
7. The governor: every run of every workflow whose id starts with ``selfheal-governor``
   (continued-as-new runs included): bytes of history grown during the storm per decision,
   events that carried a whole whitelist (over 50 KB) counted apart, so are the entry
   governors' first starts (what deciding needs of the whitelist, once per entry), the
   history by event type with its event counts, and the longest
   workflow task (WorkflowTaskStarted -> WorkflowTaskCompleted) against the SDK's 2 s
   deadlock timeout.

8. CPU seconds by process for the storm and each baseline (``cpu_seconds``): the ``selfheal
   dev`` process, the Temporal server and the AWS simulation it started, and this process
   (the baselines' workers). Wall times on a shared two-core machine move by a quarter
   between runs; CPU seconds per incident move far less, so they are what to compare two
   commits by (``--ref``: the storm runs that ref, the baselines the working tree).
9. The Temporal server's work per incident in each (``server_requests``), from the counters
   on the dev server's own metrics endpoint (named in temporal.log): the calls it received,
   by name (activity heartbeats, describes, updates, workflow tasks), and its database
   writes and reads. Where CPU seconds say how much the server worked, these say on what.

Every process it starts is stopped by its own pid (SIGINT to ``selfheal dev``, which stops its
Temporal server and moto; SIGKILL to what is left after a timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_bare import BARE_EXECUTOR, FleetBare, executor, step  # noqa: E402

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account, as in the demo
# The placeholder credentials of the demo's AWS simulation (selfheal/dev/aws_sim.py).
AWS_CREDENTIALS = {"aws_access_key_id": "selfheal-dev-simulation", "aws_secret_access_key": "selfheal-dev-simulation"}
ALERTNAME = "FleetHostWedged"
EXECUTOR_ACTIVITY = "reboot_instances"  # activities/aws_remediate.py: the ec2.reboot executor
# An incident on this path (read from histories in this run, and checked against them):
# load_policy, diagnose, read_world, assess_action (the entry governor decides and, for an
# automatic decision, reserves in the same update), read_world, reboot_instances,
# verify_remediation, notify.
STEPS = 8
EXECUTOR_STEP = 6
ANNOUNCEMENT_BYTES = 50_000
DEADLOCK_TIMEOUT = 2.0
GOVERNOR_PREFIX = "selfheal-governor"
# What to count in dev's stderr (the worker logs there).
LOG_FINDINGS = {
    "activity failed (an attempt)": "Completing activity as failed",
    "potential deadlock (SDK, 2 s)": "Potential deadlock detected",
    "eviction failed (workflow stuck in worker)": "Failed running eviction job",
    "update refused: workflow task in failed state": "RPCError: Unable to perform workflow execution update due to Workflow Task in failed state",
    "update RPC timed out or cancelled": "WorkflowUpdateRPCTimeoutOrCancelledError: Timeout or cancellation",
    "worker shutdown may hang": "could not be evicted previously",
}


# --- the generated whitelist and rules ---------------------------------------------------

def svc(i: int) -> str:
    return f"svc-{i:04d}"


def service_entry(i: int) -> dict:
    return {
        "id": f"reboot-{svc(i)}",
        "kind": "ec2.reboot",
        "description": f"Reboot {svc(i)}'s host when its agent stops reporting.",
        "target": {"tags": {"Service": svc(i), "Fleet": "storm"}, "max_instances": 1, "region": REGION, "account": ACCOUNT},
        "blast_radius": "instance",
        "approvers": {"groups": ["sre"]},
        "rate_limit": {"max_executions": 2, "window": "1h"},
        "cooldown": "10m",
        "match": [f'alertname="{ALERTNAME}"', f'service="{svc(i)}"'],
        "verify": {"timeout": "2m"},
    }


def other_entry(i: int) -> dict:
    """An entry no storm alert matches, of one of the five kinds, with a target of its own."""
    kind = ("systemd.restart", "ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")[i % 5]
    place = {"region": REGION, "account": ACCOUNT}
    common = {"approvers": {"groups": ["sre"]}, "rate_limit": {"max_executions": 3, "window": "1h"}, "cooldown": "15m",
              "match": [f'alertname="Other{kind.split(".")[0].capitalize()}Alert{i:04d}"', f'team="team-{i % 17}"'],
              "verify": {"timeout": "5m"}}
    if kind == "systemd.restart":
        return {"id": f"restart-app-{i:04d}", "kind": kind, "description": f"Restart app-{i:04d} when it stops answering.",
                "target": {"unit": f"app-{i:04d}.service", "host": f"web-{i:04d}-*"}, "blast_radius": "instance", **common}
    if kind == "ecs.rollback":
        return {"id": f"rollback-api-{i:04d}", "kind": kind, "description": f"Roll api-{i:04d} back to its pinned revision.",
                "target": {"cluster": "prod", "service": f"api-{i:04d}", "task_definition": f"api-{i:04d}:12", **place},
                "blast_radius": "service", **common}
    if kind == "asg.scale":
        return {"id": f"scale-workers-{i:04d}", "kind": kind, "description": f"Add workers to pool {i:04d} when its queue grows.",
                "target": {"group": f"workers-{i:04d}", **place}, "bounds": {"min_capacity": 2, "max_capacity": 10, "max_step": 2},
                "blast_radius": "fleet", **common}
    if kind == "ec2.reboot":
        return {"id": f"reboot-batch-{i:04d}", "kind": kind, "description": f"Reboot batch pool {i:04d}'s wedged hosts.",
                "target": {"tags": {"Role": f"batch-{i:04d}", "Env": "prod"}, "max_instances": 2, **place},
                "blast_radius": "fleet", **common}
    return {"id": f"rollback-fn-{i:04d}", "kind": kind, "description": f"Point fn-{i:04d}'s live alias back at version 3.",
            "target": {"function": f"fn-{i:04d}", "alias": "live", "version": "3", **place}, "blast_radius": "region", **common}


def write_config(out: Path, n: int, entries: int, root: Path = ROOT) -> tuple[Path, Path]:
    demo_wl = yaml.safe_load((root / "deploy/demo/whitelist.yaml").read_text())
    demo_rules = yaml.safe_load((root / "deploy/demo/diagnosis.yaml").read_text())
    # The demo's own entries come along when there is room (the demo evidence config names them).
    demo_entries = demo_wl["entries"] if entries - n >= len(demo_wl["entries"]) else []
    others = [other_entry(i) for i in range(entries - n - len(demo_entries))]
    whitelist = {
        "version": 1,
        "metadata": {"reviewed_by": ["alice", "bob"], "reviewed_at": "2026-11-25",
                     "description": f"Fleet storm benchmark: {n} services, each with its own automatic ec2.reboot entry."},
        "tiers": demo_wl["tiers"],
        "groups": demo_wl["groups"],
        "entries": [service_entry(i) for i in range(n)] + demo_entries + others,
    }
    rules = {
        "lookback": "15m", "max_lines": 2000,
        "signatures": [{"id": f"{svc(i)}-host-wedged", "summary": f"{svc(i)}'s agent stopped reporting; a reboot brings it back.",
                        "match": [f'alertname="{ALERTNAME}"', f'service="{svc(i)}"'], "propose": f"reboot-{svc(i)}",
                        "confidence": 0.5} for i in range(n)]
                      + (demo_rules["signatures"] if demo_entries else []),
    }
    wl_path, rules_path = out / "fleet-whitelist.yaml", out / "fleet-diagnosis.yaml"
    wl_path.write_text("# Generated by bench/fleet_storm.py\n" + yaml.safe_dump(whitelist, sort_keys=False, width=200))
    rules_path.write_text("# Generated by bench/fleet_storm.py\n" + yaml.safe_dump(rules, sort_keys=False, width=200))
    return wl_path, rules_path


# --- processes ---------------------------------------------------------------------------

def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: held open together while chosen, or the kernel may hand
    the same one out twice (it did: dev's Temporal and ingress ports collided)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def selfheal_argv() -> list[str]:
    script = Path(sys.executable).parent / "selfheal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "selfheal.cli"]


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(dev: "Dev") -> dict[str, float]:
    """CPU seconds (user + system) used so far: the ``selfheal dev`` process (ingress and
    worker), each of its children by name (the Temporal server, the AWS simulation), and
    this process (the baselines' workers and every client). Far steadier than wall time on
    a shared machine: the figure to compare two commits by."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"bench": usage.ru_utime + usage.ru_stime}
    for pid in [dev.proc.pid, *descendants(dev.proc.pid)]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        label = "selfheal dev" if pid == dev.proc.pid else name
        out[label] = out.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}


# The persistence operations that write (the SQL store's names): the rest read.
WRITES = ("Create", "Update", "Delete", "Complete", "RangeComplete", "Append", "Put", "Set", "Conflict")
SERIES = re.compile(r'^(service_requests|persistence_requests|visibility_persistence_requests|persistence_latency_sum|'
                    r'visibility_persistence_latency_sum)\{([^}]*)\} (\S+)$', re.M)
SERIES_KEYS = {"service_requests": "rpc:", "persistence_requests": "db:", "visibility_persistence_requests": "db:visibility ",
               "persistence_latency_sum": "dbtime:", "visibility_persistence_latency_sum": "dbtime:visibility "}


def server_metrics_url(dev: "Dev") -> str | None:
    """The dev server's Prometheus endpoint: ``temporal server start-dev`` opens one on a free
    port unless told otherwise and names it in its banner, which selfheal dev appends to
    temporal.log (so the last one is this run's)."""
    try:
        ports = re.findall(r"Temporal Metrics:\s+http://[^:/\s]+:(\d+)/metrics", (dev.data / "temporal.log").read_text(errors="replace"))
    except OSError:
        return None
    return f"http://127.0.0.1:{ports[-1]}/metrics" if ports else None


def server_requests(url: str | None) -> dict[str, float]:
    """What the Temporal server has done so far, from its own counters: each call a client or
    worker made (``rpc:<operation>``, counted at the frontend only, where the call arrives;
    the history and matching services count it again inside), each database operation
    (``db:<operation>``, the visibility store's as ``db:visibility <operation>``) and the
    seconds spent in each (``dbtime:``). Empty when the endpoint cannot be read."""
    if url is None:
        return {}
    try:
        text = httpx.get(url, timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for kind, labels, value in SERIES.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if kind == "service_requests" and fields.get("service_name") != "frontend":
            continue
        key = SERIES_KEYS[kind] + fields.get("operation", "?")
        out[key] = out.get(key, 0.0) + float(value)
    return out


@dataclass
class Source:
    """The selfheal code under test: the working tree (the venv's editable install), or a git
    ref exported and staged in the installed layout (``selfheal.workflows`` etc.) on
    PYTHONPATH, which the editable install's finder (appended to ``sys.meta_path``) yields to."""

    root: Path
    env: dict[str, str]
    describe: str

    @classmethod
    def working_tree(cls) -> "Source":
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return cls(ROOT, {}, commit + ("+uncommitted changes" if dirty else ""))

    @classmethod
    def exported(cls, ref: str, where: Path) -> "Source":
        commit = git("rev-parse", "--short", ref)
        tree = where / "tree"
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        pkg = where / "pkg" / "selfheal"
        shutil.copytree(tree / "selfheal", pkg)
        for sub in ("whitelist", "workflows", "activities"):
            shutil.copytree(tree / sub, pkg / sub)
        return cls(tree, {"PYTHONPATH": str(where / "pkg")}, f"{commit} (git archive of {ref})")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


class Dev:
    """``selfheal dev`` as a child process, stopped by its pid."""

    def __init__(self, data: Path, whitelist: Path, rules: Path, source: "Source"):
        self.data = data
        self.ports = dict(zip(("temporal", "ui", "ingress", "aws"), free_ports(4)))
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("SELFHEAL_LLM_") or k in ("SELFHEAL_DIAGNOSER", "SELFHEAL_DEV_TOKEN"))} | source.env
        self.stderr = (data.parent / "dev.err").open("w")
        self.proc = subprocess.Popen(
            [*selfheal_argv(), "dev", "--data-dir", str(data), "--temporal-port", str(self.ports["temporal"]),
             "--ui-port", str(self.ports["ui"]), "--ingress-port", str(self.ports["ingress"]),
             "--aws-port", str(self.ports["aws"]), "--whitelist", str(whitelist), "--diagnosis", str(rules)],
            cwd=source.root, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, env=env)
        self.lines: list[str] = []

    def wait_ready(self, timeout: float = 180.0) -> None:
        pending, deadline, fd = b"", time.monotonic() + timeout, self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"selfheal dev exited with {self.proc.wait()}; stderr: {self.err_tail()}")
                pending += chunk
                *complete, pending = pending.split(b"\n")
                self.lines += [c.decode() for c in complete]
                if any("Ctrl-C stops everything." in line for line in self.lines):
                    break
        else:
            raise RuntimeError(f"selfheal dev not ready within {timeout}s: {self.lines}; stderr: {self.err_tail()}")
        text = "\n".join(self.lines)
        self.temporal = re.search(r"Temporal:\s+(\S+:\d+)", text).group(1)
        ingress = re.search(r"Ingress:\s+(\S+)\s+\(bearer token (\S+)\)", text)
        self.ingress_url, self.token = ingress.group(1), ingress.group(2)
        self.aws_url = re.search(r"AWS:\s+(http://\S+)", text).group(1)
        # Keep draining stdout so dev never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            for line in self.proc.stdout:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
        except (OSError, ValueError):
            pass

    def err_tail(self, chars: int = 3000) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        try:
            return (self.data.parent / "dev.err").read_text()[-chars:]
        except OSError:
            return ""

    def findings(self) -> dict[str, dict]:
        """Lines in dev's log that say something went wrong in the worker: how many, first and last time."""
        found: dict[str, dict] = {}
        stamp = None
        try:
            lines = (self.data.parent / "dev.err").read_text(errors="replace").splitlines()
        except OSError:
            return found
        for line in lines:
            if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line):
                stamp = line[11:19]
            for label, pattern in LOG_FINDINGS.items():
                if pattern in line:
                    f = found.setdefault(label, {"count": 0, "first": stamp, "last": stamp})
                    f["count"] += 1
                    f["last"] = stamp
        return found

    def stop(self, timeout: float = 90.0) -> int | None:
        if self.proc.poll() is not None:
            return self.proc.returncode
        kids = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kids = sorted(set(kids + descendants(self.proc.pid)))
            self.proc.kill()
            code = self.proc.wait()
        for pid in kids:  # normally dev stopped them itself; these are leftovers after a SIGKILL
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if str(self.data).encode() in cmd or b"moto_server" in cmd:
                os.kill(pid, signal.SIGKILL)
        self.stderr.close()
        return code


# --- AWS simulation ----------------------------------------------------------------------

def seed_instances(aws_url: str, n: int) -> list[str]:
    import boto3

    session = boto3.session.Session(region_name=REGION, **AWS_CREDENTIALS)
    ec2 = session.client("ec2", endpoint_url=aws_url)
    from selfheal.dev.aws_sim import DEMO_IMAGE


    def one(i: int) -> str:
        client = session.client("ec2", endpoint_url=aws_url) if i else ec2
        tags = [{"Key": "Service", "Value": svc(i)}, {"Key": "Fleet", "Value": "storm"}, {"Key": "Name", "Value": f"{svc(i)}-host"}]
        run = client.run_instances(ImageId=DEMO_IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                   TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        return run["Instances"][0]["InstanceId"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


# --- histories ---------------------------------------------------------------------------

def ts(event) -> float:
    return event.event_time.ToNanoseconds() / 1e9


def activity_starts(events) -> dict[str, list[float]]:
    """Activity type -> start times (ActivityTaskStarted event time), in history order."""
    names = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
             for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    out: dict[str, list[float]] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            out.setdefault(names.get(e.activity_task_started_event_attributes.scheduled_event_id, "?"), []).append(ts(e))
    return out


DURABLE_STEP_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: None,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child workflow",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signal to a workflow",
    EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED: "nexus operation",
}


def retries(events) -> dict[str, tuple[int, str]]:
    """Activity type -> (extra attempts, the last failure before the attempt that ran last)."""
    names = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
             for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    out: dict[str, tuple[int, str]] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            if a.attempt > 1:
                name = names.get(a.scheduled_event_id, "?")
                extra, _ = out.get(name, (0, ""))
                failure = a.last_failure
                why = (failure.message or failure.cause.message) if failure.ByteSize() else ""
                if failure.HasField("timeout_failure_info"):
                    why = f"{why} ({TimeoutType.Name(failure.timeout_failure_info.timeout_type)})"
                out[name] = (extra + a.attempt - 1, why[:160])
    return out


def durable_steps(events) -> list[str]:
    """The durable steps an incident took, in order: activity types, child workflows, signals sent."""
    steps = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            steps.append(e.activity_task_scheduled_event_attributes.activity_type.name)
        elif e.event_type in DURABLE_STEP_EVENTS:
            steps.append(DURABLE_STEP_EVENTS[e.event_type])
    return steps


def breakdown(events, t0: float, executor_name: str) -> dict[str, float] | None:
    """Where the time from ``t0`` (the alert post, the start call) to the executor's start
    went: to the workflow's start, each activity before it (scheduled -> completed), the
    workflow tasks between them, and the executor's time in the queue."""
    names = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
             for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    scheduled_at: dict[int, float] = {}
    out: dict[str, float] = {}
    start = next((ts(e) for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED), None)
    if start is None:
        return None
    out["to workflow start"] = start - t0
    tasks, last = 0.0, start
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            tasks += ts(e) - last
            scheduled_at[e.event_id] = ts(e)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = e.activity_task_started_event_attributes.scheduled_event_id
            if names.get(sid) == executor_name:
                out["workflow tasks"] = tasks
                out["executor queued"] = ts(e) - scheduled_at[sid]
                return out
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            name = label = names.get(sid, "?")
            k = 1
            while label in out:  # the second read_world: read_world#2
                k += 1
                label = f"{name}#{k}"
            out[label] = ts(e) - scheduled_at[sid]
            last = ts(e)
    return None


def median_breakdown(parts: list[dict | None]) -> dict[str, float]:
    parts = [p for p in parts if p]
    keys = list(dict.fromkeys(k for p in parts for k in p))
    return {k: statistics.median(p[k] for p in parts if k in p) for k in keys}


CLOSE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


def completed_result(events) -> tuple[str, dict | None]:
    """The workflow's close event type and its decoded JSON result, if it completed."""
    last = events[-1] if events else None
    if last is None:
        return "no history", None
    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        try:
            return "completed", json.loads(payloads[0].data) if payloads else None
        except ValueError:
            return "completed", None
    return EventType.Name(last.event_type).removeprefix("EVENT_TYPE_").lower(), None


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def gather_limited(limit: int, coros):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


# --- the baseline ------------------------------------------------------------------------

async def executor_started(handle, activity: str, deadline: float, every: float = 0.1) -> bool:
    """Wait until ``activity`` has started in the workflow's history (Temporal writes the
    started event when the attempt ends; its time is the start), or the workflow closed."""
    while time.time() < deadline:
        events = list((await handle.fetch_history()).events)
        if activity in activity_starts(events):
            return True
        if events and events[-1].event_type in CLOSE_EVENTS:
            return False
        await asyncio.sleep(every)
    return False


async def baseline(client: Client, n: int, one_by_one: bool = False, gap: float = 0.0) -> dict:
    """N bare workflows, started at once, or ``one_by_one`` (each once the previous one's
    executor step started, and ``gap`` seconds more)."""
    queue = f"fleet-bare-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[FleetBare], activities=[step, executor]):
        ids = [f"fleet-bare-{uuid.uuid4().hex[:12]}" for _ in range(n)]
        t0 = time.time()

        async def start(wid: str):
            sent = time.time()
            handle = await client.start_workflow(FleetBare.run, args=[STEPS, EXECUTOR_STEP], id=wid, task_queue=queue)
            if one_by_one:
                await executor_started(handle, BARE_EXECUTOR, time.time() + 120)
                await asyncio.sleep(gap)
            return sent, handle

        started = ([await start(w) for w in ids] if one_by_one
                   else await asyncio.gather(*(start(w) for w in ids)))
        await asyncio.gather(*(h.result() for _, h in started))
        wall = time.time() - t0
    histories = await gather_limited(20, (h.fetch_history() for _, h in started))
    to_exec, exec_at, finished, parts = [], [], [], []
    for (sent, _), history in zip(started, histories):
        events = list(history.events)
        parts.append(breakdown(events, sent, BARE_EXECUTOR))
        at = activity_starts(events)[BARE_EXECUTOR][0]
        to_exec.append(at - sent)
        exec_at.append(at)
        finished.append(ts(events[-1]))
    return {"last_finished_s": max(finished) - t0, "last_executor_s": max(exec_at) - t0, "wall_s": wall,
            "start_to_executor_p50_s": pct(to_exec, 50), "start_to_executor_p90_s": pct(to_exec, 90),
            "start_to_executor_p95_s": pct(to_exec, 95), "start_to_executor_samples_s": to_exec,
            "breakdown_p50_s": median_breakdown(parts)}


@contextlib.asynccontextmanager
async def in_process_worker(dev: Dev, rules: Path, workflows: list):
    """selfheal's worker (``selfheal.worker.run_worker``: dev's activities and worker options)
    in this process, with extra ``workflows``, on a task queue of its own (so governors of
    its own) of dev's server, with dev's whitelist copy and AWS simulation. Yields the queue.
    It runs the working tree's selfheal, whatever ``--ref`` says."""
    import boto3

    from selfheal import connection
    from selfheal.activities.aws_clients import AwsClients
    from selfheal.settings import WorkerSettings
    from selfheal.worker import WORKFLOWS, run_worker

    queue = f"bench-{uuid.uuid4().hex[:6]}"
    settings = WorkerSettings.from_mapping(
        {}, temporal=connection.from_address(dev.temporal), whitelist=str(dev.data / "whitelist.yaml"), diagnosis=str(rules),
        evidence=str(ROOT / "deploy/demo/evidence.yaml"), task_queue=queue)  # dev's defaults
    aws = AwsClients(dev.aws_url, session=boto3.session.Session(region_name=REGION, **AWS_CREDENTIALS),
                     simulation=f"LOCAL AWS SIMULATION at {dev.aws_url}, not AWS")
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop, workflows=[*WORKFLOWS, *workflows], aws=aws))
    try:
        done, _ = await asyncio.wait([task], timeout=2)  # a worker that cannot start says why
        if done:
            task.result()
        yield queue
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


def automatic_input(loaded, i: int, instance: str, wid: str, noop_queue: str | None = None):
    """What an automatic incident of service ``i`` gives its activities (bench/bare_aws.py)."""
    from bare_aws import BareAwsAutomaticInput

    from selfheal.contract import ActionRequest, Alert, DiagnoseInput, Notification, RemediationInput, VerifyInput
    from selfheal.contract import LoadPolicy
    from selfheal.whitelist import target_of
    from selfheal.contract.governor import AssessInput

    entry = loaded.whitelist.entry(f"reboot-{svc(i)}")
    raw = fleet_alert(i, instance)
    alert = Alert(labels=raw["labels"], annotations=raw["annotations"], starts_at=raw["starts_at"], fingerprint=f"{wid}-alert")
    request = ActionRequest(entry_id=entry.id, target=target_of(entry), params={"instance_ids": [instance]})
    key = f"{wid}/act/{entry.id}"
    return BareAwsAutomaticInput(
        executor=EXECUTOR_ACTIVITY, policy=LoadPolicy(label_sets=[alert.labels]),
        diagnose=DiagnoseInput(incident_id=wid, alerts=[alert], candidates=[entry.id]), request=request,
        assess=AssessInput(whitelist_sha256=loaded.sha256, policy=loaded.whitelist.for_entry(entry.id), request=request,
                           incident_id=wid, idempotency_key=key),
        remediation=RemediationInput(incident_id=wid, idempotency_key=key, whitelist_sha256=loaded.sha256, request=request,
                                     autonomous=True),
        verify=VerifyInput(incident_id=wid, request=request, timeout_seconds=entry.verify.timeout.total_seconds()),
        note=Notification(incident_id=wid, kind="outcome", summary=f"{entry.id}: remediated"), noop_queue=noop_queue)


async def baseline_same_activities(dev: Dev, rules: Path, instances: list[str], k: int, gap: float = 0.0,
                                   at_once: bool = False, governed: bool = True) -> dict:
    """K bare workflows that run an automatic incident's activities (bench/bare_aws.py
    ``BareAwsAutomatic``): one after the other as in ``sequential``, or all at once as in
    the storm (``at_once``); start -> executor started, and when the last one started.
    Not ``governed``: a no-op step in the governor's place (the world alone)."""
    from bare_aws import BareAwsAutomatic

    from selfheal import connection
    from selfheal.whitelist import load_whitelist

    loaded = load_whitelist(dev.data / "whitelist.yaml")
    client = await connection.connect(connection.from_address(dev.temporal))  # selfheal's data converter
    noop_queue = None if governed else f"noop-{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(in_process_worker(dev, rules, [BareAwsAutomatic]))
        if noop_queue:
            await stack.enter_async_context(Worker(client, task_queue=noop_queue, activities=[step]))
        t0 = time.time()

        async def start(i: int):
            wid = f"bare-auto-{queue}-{i:03d}"
            sent = time.time()
            handle = await client.start_workflow(BareAwsAutomatic.run, automatic_input(loaded, i, instances[i], wid, noop_queue),
                                                 id=wid, task_queue=queue)
            if not at_once:
                await executor_started(handle, EXECUTOR_ACTIVITY, time.time() + 120)
                await asyncio.sleep(gap)
            return sent, handle

        started = (await asyncio.gather(*(start(i) for i in range(k))) if at_once
                   else [await start(i) for i in range(k)])
        await asyncio.gather(*(h.result() for _, h in started))
    histories = await gather_limited(20, (h.fetch_history() for _, h in started))
    to_exec, exec_at, parts = [], [], []
    for (sent, _), history in zip(started, histories):
        events = list(history.events)
        parts.append(breakdown(events, sent, EXECUTOR_ACTIVITY))
        at = activity_starts(events)[EXECUTOR_ACTIVITY][0]
        to_exec.append(at - sent)
        exec_at.append(at)
    return {"start_to_executor_p50_s": pct(to_exec, 50), "start_to_executor_p90_s": pct(to_exec, 90),
            "start_to_executor_p95_s": pct(to_exec, 95), "last_executor_s": max(exec_at) - t0,
            "start_to_executor_samples_s": to_exec, "breakdown_p50_s": median_breakdown(parts)}


# --- the governor ------------------------------------------------------------------------

async def governor_runs(client: Client) -> list[tuple[str, str]]:
    try:
        runs = [(w.id, w.run_id) async for w in client.list_workflows(f'WorkflowId STARTS_WITH "{GOVERNOR_PREFIX}"')]
    except Exception:  # a visibility store without STARTS_WITH: list everything and filter here
        runs = [(w.id, w.run_id) async for w in client.list_workflows() if w.id.startswith(GOVERNOR_PREFIX)]
    return runs


async def governor_histories(client: Client) -> dict[tuple[str, str], list]:
    runs = await governor_runs(client)
    histories = await gather_limited(4, (client.get_workflow_handle(wid, run_id=rid).fetch_history() for wid, rid in runs))
    return {run: list(h.events) for run, h in zip(runs, histories)}


CARRIES_INPUT = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
}


def governor_figures(before: dict, after: dict, decisions: int, threshold: int) -> dict:
    """History grown on the governor between the two snapshots (events after each run's
    event count in ``before``), per decision, with whole-whitelist events counted apart."""
    total = big_bytes = big_count = 0
    big_other: dict[str, list[int]] = {}
    by_type: dict[str, int] = {}
    counts: dict[str, int] = {}
    teach_bytes = teach_count = 0
    longest_task, longest_at, task_failures = 0.0, None, []
    all_bytes = 0
    for run, events in after.items():
        seen = len(before.get(run, []))
        started_at = {}
        for i, e in enumerate(events):
            size = e.ByteSize()
            all_bytes += size
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                started_at[e.event_id] = ts(e)
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                began = started_at.get(e.workflow_task_completed_event_attributes.started_event_id)
                if began is not None and ts(e) - began > longest_task:
                    longest_task, longest_at = ts(e) - began, f"{run[0]} run {run[1][:8]} event {e.event_id}"
            elif e.event_type in (EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT):
                task_failures.append(f"{EventType.Name(e.event_type)} in {run[0]} run {run[1][:8]} event {e.event_id}")
            if i < seen:
                continue
            total += size
            name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
            by_type[name] = by_type.get(name, 0) + size
            counts[name] = counts.get(name, 0) + 1
            first = e.workflow_execution_started_event_attributes
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and not first.continued_execution_run_id:
                # An entry governor's first start: it carries what deciding needs of the
                # whitelist, once per entry (and whitelist), however many decisions follow.
                teach_bytes += size
                teach_count += 1
            if size > threshold:
                if e.event_type in CARRIES_INPUT:
                    big_bytes += size
                    big_count += 1
                else:
                    big_other.setdefault(name, []).append(size)
    per = (lambda b: b / decisions) if decisions else (lambda b: None)
    return {
        "runs": len(after), "runs_during_storm": len(set(after) - set(before)), "history_bytes_all_runs": all_bytes,
        "storm_bytes": total, "storm_bytes_per_decision": per(total),
        "announcement_threshold_bytes": threshold, "whitelist_announcements": big_count, "whitelist_announcement_bytes": big_bytes,
        "bytes_per_decision_without_announcements": per(total - big_bytes),
        "other_big_events": {k: {"count": len(v), "bytes": sum(v)} for k, v in big_other.items()},
        "first_starts": teach_count, "first_start_bytes": teach_bytes,
        "bytes_per_decision_without_first_starts": per(total - big_bytes - teach_bytes),
        "storm_bytes_by_event_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        "storm_events_by_type": counts,
        "longest_workflow_task_s": longest_task, "longest_workflow_task_at": longest_at,
        "workflow_task_failures": task_failures,
    }


# --- the storm ---------------------------------------------------------------------------

def fleet_alert(i: int, instance: str) -> dict:
    return {"labels": {"alertname": ALERTNAME, "service": svc(i), "instance_id": instance, "severity": "page"},
            "annotations": {"summary": f"{svc(i)}'s agent on {instance} stopped reporting"},
            "starts_at": datetime.now(timezone.utc).isoformat()}


def ingress_client(connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                             timeout=60)


async def post_alert(http: httpx.AsyncClient, dev: Dev, alert: dict) -> dict:
    """Post one alert to the generic endpoint, retrying what was not accepted (503) as
    Alertmanager does. The record: when it was first sent, every answer, the incident id."""
    rec: dict = {"sent": time.time(), "statuses": []}
    for attempt in range(5):
        try:
            r = await http.post(f"{dev.ingress_url}/v1/alerts/generic", json={"alerts": [alert]},
                                headers={"Authorization": f"Bearer {dev.token}"})
        except httpx.HTTPError as exc:
            rec["statuses"].append(type(exc).__name__)
        else:
            rec["statuses"].append(r.status_code)
            if r.status_code == 202:
                rec["answered"] = time.time()
                rec["incident"] = r.json()["incidents"][0]["id"]
                return rec
        await asyncio.sleep(0.5 * (attempt + 1))
    return rec


async def wait_outcomes(client: Client, accepted: list[dict], deadline: float) -> None:
    async def outcome(p: dict) -> None:
        try:
            await asyncio.wait_for(client.get_workflow_handle(p["incident"]).result(), timeout=max(1.0, deadline - time.time()))
        except asyncio.TimeoutError:
            p["timed_out"] = True
        except Exception as exc:  # a failed workflow: its history says more
            p["error"] = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(outcome(p) for p in accepted))


async def incident_figures(client: Client, posts: list[dict]) -> dict:
    """What the accepted incidents' histories say: alert post -> executor started, outcomes,
    retried activities, and the durable steps of the path measured."""
    accepted = [p for p in posts if "incident" in p]
    histories = await gather_limited(20, (client.get_workflow_handle(p["incident"]).fetch_history() for p in accepted))
    to_exec, acted_at, outcomes, steps_seen, problems, parts = [], [], {}, {}, [], []
    retried: dict[str, dict] = {}
    for p, history in zip(accepted, histories):
        events = list(history.events)
        parts.append(breakdown(events, p["sent"], EXECUTOR_ACTIVITY))
        starts = activity_starts(events).get(EXECUTOR_ACTIVITY)
        if starts:
            to_exec.append(starts[0] - p["sent"])
            acted_at.append(starts[0])
        close, result = completed_result(events)
        out = (result or {}).get("outcome") if close == "completed" else ("timed out waiting" if p.get("timed_out") else close)
        outcomes[out] = outcomes.get(out, 0) + 1
        if out != "remediated" and len(problems) < 5:
            problems.append(f"{p['incident']}: {out}: {(result or {}).get('outcome_detail') or p.get('error', '')}"[:400])
        for name, (extra, why) in retries(events).items():
            r = retried.setdefault(name, {"incidents": 0, "extra_attempts": 0, "last_failures": {}})
            r["incidents"] += 1
            r["extra_attempts"] += extra
            r["last_failures"][why] = r["last_failures"].get(why, 0) + 1
        steps = (out == "remediated", tuple(durable_steps(events)))
        steps_seen[steps] = steps_seen.get(steps, 0) + 1
    # The step count of the path measured: a remediated incident's, when any remediated.
    remediated_path, common_steps = max(steps_seen, key=lambda k: (k[0], steps_seen[k])) if steps_seen else (False, ())
    return {
        "alerts": len(posts), "accepted": len(accepted), "post_statuses": sorted({str(s) for p in posts for s in p["statuses"]}),
        "acted": len(to_exec), "outcomes": outcomes, "problems": problems,
        "alert_to_executor_p50_s": pct(to_exec, 50), "alert_to_executor_p90_s": pct(to_exec, 90),
        "alert_to_executor_p95_s": pct(to_exec, 95), "alert_to_executor_max_s": max(to_exec, default=None),
        "alert_to_executor_samples_s": to_exec, "acted_at": acted_at,
        "incident_steps": list(common_steps), "incident_step_count": len(common_steps),
        "incident_steps_from": "a remediated incident" if remediated_path else "a failed incident (none remediated)",
        "step_sequences_seen": len(steps_seen), "activity_retries": retried,
        "breakdown_p50_s": median_breakdown(parts),
    }


async def storm(client: Client, dev: Dev, instances: list[str], timeout: float) -> dict:
    """Every service alerts at once."""
    n = len(instances)
    t0 = time.time()
    async with ingress_client(n) as http:
        posts = await asyncio.gather(*(post_alert(http, dev, fleet_alert(i, instances[i])) for i in range(n)))
    posted_in = max((p.get("answered", p["sent"]) for p in posts), default=t0) - t0
    accepted = [p for p in posts if "incident" in p]
    await wait_outcomes(client, accepted, t0 + timeout)
    storm_wall = time.time() - t0
    figures = await incident_figures(client, posts)
    acted_at = figures.pop("acted_at")
    return {**figures, "posted_within_s": posted_in,
            "last_acted_s": (max(acted_at) - t0) if acted_at else None, "all_outcomes_s": storm_wall}


async def sequential(client: Client, dev: Dev, instances: list[str], k: int, timeout: float, gap: float = 0.0) -> dict:
    """One incident at a time on a quiet machine: ``k`` services alert one after the other,
    each posted once the previous incident's executor started, and ``gap`` seconds more."""
    t0 = time.time()
    posts = []
    async with ingress_client(1) as http:
        for i in range(k):
            rec = await post_alert(http, dev, fleet_alert(i, instances[i]))
            posts.append(rec)
            if "incident" in rec:
                rec["executor_seen"] = await executor_started(client.get_workflow_handle(rec["incident"]), EXECUTOR_ACTIVITY,
                                                              time.time() + timeout)
            await asyncio.sleep(gap)
    await wait_outcomes(client, [p for p in posts if "incident" in p], time.time() + timeout)
    figures = await incident_figures(client, posts)
    figures.pop("acted_at")
    return {**figures, "all_outcomes_s": time.time() - t0}


# --- main --------------------------------------------------------------------------------

def fmt(v, unit="s", digits=1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def steps_line(s: dict) -> str:
    return (f"  incident durable steps (of {s.get('incident_steps_from', '?')}): {s['incident_step_count']} "
            f"({', '.join(s['incident_steps'])}); baseline runs {STEPS}, executor step {EXECUTOR_STEP}"
            + ("" if s["incident_step_count"] == STEPS else "  ** MISMATCH **"))


def problem_lines(s: dict) -> list[str]:
    return [
        *(f"    problem: {p}" for p in s["problems"]),
        *(f"    retried {name}: {r['extra_attempts']} extra attempts in {r['incidents']} incidents; last failures: "
          + "; ".join(f"{k or '?'} x{v}" for k, v in r["last_failures"].items()) for name, r in s.get("activity_retries", {}).items()),
    ]


def governor_lines(g: dict) -> list[str]:
    if not g:
        return []
    return [
        f"  governor: {g['runs']} runs ({g['runs_during_storm']} new during the measurement), {g['history_bytes_all_runs'] / 1e6:.2f} MB "
        f"of history in all; grown during the measurement {g['storm_bytes'] / 1e6:.2f} MB = "
        f"{fmt(g['storm_bytes_per_decision'] and g['storm_bytes_per_decision'] / 1e3, ' KB', 2)} per decision",
        f"    whitelist announcements (start/update/signal events > {g['announcement_threshold_bytes'] // 1000} KB): {g['whitelist_announcements']}, "
        f"{g['whitelist_announcement_bytes'] / 1e6:.2f} MB; without them "
        f"{fmt(g['bytes_per_decision_without_announcements'] and g['bytes_per_decision_without_announcements'] / 1e3, ' KB', 2)} per decision",
        f"    other events > {g['announcement_threshold_bytes'] // 1000} KB: {g['other_big_events'] or 'none'}",
        f"    governors' first starts (what deciding needs of the whitelist, once per entry): {g['first_starts']}, "
        f"{g['first_start_bytes'] / 1e6:.3f} MB; without them "
        f"{fmt(g['bytes_per_decision_without_first_starts'] and g['bytes_per_decision_without_first_starts'] / 1e3, ' KB', 2)} per decision",
        "    largest by event type: " + ", ".join(f"{k} {v / 1e6:.3f} MB ({g['storm_events_by_type'][k]} events)"
                                               for k, v in list(g["storm_bytes_by_event_type"].items())[:5]),
        f"    longest workflow task: {fmt(g['longest_workflow_task_s'], digits=3)} (deadlock timeout {DEADLOCK_TIMEOUT:.0f}s) "
        f"at {g['longest_workflow_task_at']}; workflow task failures/timeouts: {len(g['workflow_task_failures'])}",
        *(f"      {f}" for f in g["workflow_task_failures"][:5]),
    ]


def dev_lines(res: dict) -> list[str]:
    lines = []
    if res.get("dev_exit") not in (0, None):
        lines.append(f"  selfheal dev exited with {res['dev_exit']} after SIGINT (-9: killed after the timeout)")
    for label, f in res.get("dev_log", {}).items():
        lines.append(f"  dev log: {label}: {f['count']} lines, {f['first']} .. {f['last']}")
    lines.append(f"  whitelist file {res['whitelist_bytes'] // 1024} KB")
    return lines


def report(res: dict) -> str:
    s, b = res["storm"], res["baselines"]
    bm = res["baseline_median"]
    lines = [
        f"fleet storm: {res['n']} services, {res['entries']} whitelist entries; commit {res['commit']}, {res['date']}",
        steps_line(s),
        f"  storm: {s['accepted']}/{s['alerts']} alerts accepted within {fmt(s['posted_within_s'], digits=2)} "
        f"(answers {', '.join(s['post_statuses'])}); acted {s['acted']}/{s['alerts']}; outcomes {s['outcomes']}",
        f"    alert -> executor started: p50 {fmt(s['alert_to_executor_p50_s'])}, p95 {fmt(s['alert_to_executor_p95_s'])}, "
        f"max {fmt(s['alert_to_executor_max_s'])}; last acted {fmt(s['last_acted_s'])} after the first post; "
        f"all outcomes in {fmt(s['all_outcomes_s'])}",
        *problem_lines(s),
    ]
    for label, x in zip(("before", "after"), b):
        lines.append(f"  baseline {label}: last finished {fmt(x['last_finished_s'])} (last executor step {fmt(x['last_executor_s'])}), start -> executor step p50 "
                     f"{fmt(x['start_to_executor_p50_s'])}, p95 {fmt(x['start_to_executor_p95_s'])}")
    lines.append(f"  baseline median: last finished {fmt(bm['last_finished_s'])}, executor step p50 "
                 f"{fmt(bm['start_to_executor_p50_s'])}, p95 {fmt(bm['start_to_executor_p95_s'])}")
    partial = "" if s["acted"] == s["alerts"] else f"  (only {s['acted']}/{s['alerts']} acted: not comparable)"
    lines.append(f"  ratio storm last acted / bare last finished: {fmt(res['ratio'], 'x', 2)}{partial}")
    for label, x in zip(("before", "after"), res["same_activities"]):
        lines.append(f"  same activities {label} (bench/bare_aws.py, all at once): last executor started "
                     f"{fmt(x['last_executor_s'])}, start -> executor p50 {fmt(x['start_to_executor_p50_s'])}, "
                     f"p95 {fmt(x['start_to_executor_p95_s'])}")
    lines.append(f"  ratio storm last acted / same activities' last executor started (median of both): "
                 f"{fmt(res['ratio_same_activities'], 'x', 2)}{partial}")
    for label, x in zip(("before", "after"), res.get("world_only", [])):
        lines.append(f"  world only {label} (the same activities, a no-op step in the governor's place): last executor "
                     f"started {fmt(x['last_executor_s'])}, start -> executor p50 {fmt(x['start_to_executor_p50_s'])}, "
                     f"p95 {fmt(x['start_to_executor_p95_s'])}")
    if "ratio_world_only" in res:
        lines.append(f"  ratio storm last acted / world only's last executor started (median of both): "
                     f"{fmt(res['ratio_world_only'], 'x', 2)}{partial}")
    lines += cpu_lines([("storm", s), *((f"{name} {label}", x) for name, key in (
        ("no-op", "baselines"), ("same activities", "same_activities"), ("world only", "world_only"))
        for label, x in zip(("before", "after"), res.get(key, [])))], res["n"])
    lines += server_lines([("storm", s), *((f"{name} {label}", x) for name, key in (
        ("no-op", "baselines"), ("same activities", "same_activities"), ("world only", "world_only"))
        for label, x in zip(("before", "after"), res.get(key, [])))], res["n"])
    return "\n".join(lines + governor_lines(res.get("governor", {})) + dev_lines(res))


def cpu_lines(measured: list[tuple[str, dict]], n: int) -> list[str]:
    """CPU seconds by process for each measurement: the storm's selfheal dev process against
    the baselines' workers (this process), per incident, and the servers' alike."""
    lines = ["  CPU seconds by process (per incident in brackets; the storm's Python is selfheal dev, "
             "the baselines' is this process):"]
    for label, x in measured:
        cpu = x.get("cpu_s")
        if cpu:
            parts = ", ".join(f"{k} {v:.1f} ({v / n * 1000:.0f} ms)" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                              if v >= 0.05)
            lines.append(f"    {label}: {parts}")
    return lines


def server_lines(measured: list[tuple[str, dict]], n: int) -> list[str]:
    """What the Temporal server did per incident in each measurement, by its own counters:
    the calls it received (those made at least once per two incidents, by name) and its
    database operations. Includes what the server does on its own meanwhile (reading
    namespace and cluster metadata every few seconds), so a longer phase counts a little more.
    The milliseconds are each operation's own latency summed: time waiting for SQLite's
    single writer is in them, so they say where the database queue formed, not CPU."""
    lines = ["  Temporal server work per incident (its own counters: calls received, by name; database operations, and the "
             "milliseconds they took, waits for SQLite's one writer included, so concurrent ones overlap):"]
    for label, x in measured:
        ops = x.get("server_ops")
        if not ops:
            continue
        calls = {k[4:]: v / n for k, v in ops.items() if k.startswith("rpc:")}
        db = {k[3:]: v / n for k, v in ops.items() if k.startswith("db:")}
        ms_in = {k[7:]: v / n * 1000 for k, v in ops.items() if k.startswith("dbtime:")}
        writes = sum(v for k, v in db.items() if k.removeprefix("visibility ").startswith(WRITES))
        named = ", ".join(f"{k} {v:.1f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.5)
        slowest = ", ".join(f"{k} {v:.1f}" for k, v in sorted(ms_in.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"    {label}: {sum(calls.values()):.1f} calls ({named}); database {writes:.1f} writes, "
                     f"{sum(db.values()) - writes:.1f} reads, {sum(ms_in.values()):.1f} ms in it (most: {slowest})")
    return lines


def ms(v) -> str:
    return fmt(v and v * 1000, " ms", 0)


def where_the_time_went(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v * 1000:.0f}" for k, v in parts.items())


def report_sequential(res: dict) -> str:
    s = res["sequential"]
    gap = f", and {res['gap_s']:g} s more" if res.get("gap_s") else ""
    partial = "" if s["acted"] == s["alerts"] else f"  (only {s['acted']}/{s['alerts']} acted: not comparable)"
    lines = [
        f"one incident at a time: {s['alerts']} services alert one after the other (each once the previous executor "
        f"started{gap}); {res['n']} services, {res['entries']} whitelist entries; commit {res['commit']}, {res['date']}",
        steps_line(s),
        f"  incidents: {s['accepted']}/{s['alerts']} accepted (answers {', '.join(s['post_statuses'])}); acted {s['acted']}/{s['alerts']}; "
        f"outcomes {s['outcomes']}; all outcomes in {fmt(s['all_outcomes_s'])}",
        f"    alert -> executor started: median {ms(s['alert_to_executor_p50_s'])}, p90 {ms(s['alert_to_executor_p90_s'])}, "
        f"max {ms(s['alert_to_executor_max_s'])}",
        *problem_lines(s),
    ]
    for name, runs, what in (("same_activities", res["same_activities"], "the same activities (bench/bare_aws.py), started"),
                             ("baseline", res["baselines"], f"{STEPS} no-op activities (bench/fleet_bare.py), started")):
        lines += [f"  bare workflows of {what} one after the other, start -> executor started:",
                  *(f"    {label}: median {ms(x['start_to_executor_p50_s'])}, p90 {ms(x['start_to_executor_p90_s'])}"
                    for label, x in zip(("before", "after"), runs)),
                  f"    both runs pooled: median {ms(res[f'{name}_pooled_p50_s'])}, p90 {ms(res[f'{name}_pooled_p90_s'])}; "
                  f"ratio of medians incident / bare {fmt(res[f'ratio_{name}'], 'x', 2)}{partial}"]
    lines += [
        "  where the time went (medians, ms):",
        f"    incident:        {where_the_time_went(s['breakdown_p50_s'])}",
        f"    same activities: {where_the_time_went(res['same_activities'][-1]['breakdown_p50_s'])}",
        f"    no-op:           {where_the_time_went(res['baselines'][-1]['breakdown_p50_s'])}",
        f"  target (issue 21): incident / bare with the same activities <= 1.2x: {fmt(res['ratio'], 'x', 2)}",
    ]
    return "\n".join(lines + governor_lines(res.get("governor", {})) + dev_lines(res))


async def run(args, tmp: Path) -> dict:
    source = Source.working_tree() if args.ref is None else Source.exported(args.ref, tmp / "source")
    wl, rules = write_config(tmp, args.n, args.entries, source.root)
    checked = subprocess.run([*selfheal_argv(), "whitelist", "check", str(wl)], cwd=source.root, env={**os.environ, **source.env},
                             capture_output=True, text=True, timeout=120)
    if checked.returncode != 0:
        raise SystemExit(f"generated whitelist is invalid:\n{checked.stdout}{checked.stderr}")
    print(f"[fleet_storm] whitelist {wl} ({wl.stat().st_size // 1024} KB) checks; starting selfheal dev", file=sys.stderr)
    dev = Dev(tmp / "devdata", wl, rules, source)
    mode = "sequential" if args.sequential else "storm"
    try:
        dev.wait_ready()
        instances = seed_instances(dev.aws_url, args.n)
        client = await Client.connect(dev.temporal, namespace="default")

        metrics = server_metrics_url(dev)

        async def with_costs(work) -> dict:
            before, asked = cpu_seconds(dev), server_requests(metrics)
            figures = await work
            done = server_requests(metrics)
            return {**figures, "cpu_s": cpu_used(before, cpu_seconds(dev)),
                    "server_ops": {k: v - asked.get(k, 0.0) for k, v in done.items() if v > asked.get(k, 0.0)}}

        async def measure_baselines() -> dict:
            """No-op bare workflows; for --sequential, also bare workflows of the same activities."""
            if not args.sequential:
                return {"bare": await with_costs(baseline(client, args.n)),
                        "same": await with_costs(baseline_same_activities(dev, rules, instances, args.n, at_once=True)),
                        "world": await with_costs(baseline_same_activities(dev, rules, instances, args.n, at_once=True,
                                                                         governed=False))}
            return {"bare": await baseline(client, args.sequential, one_by_one=True, gap=args.gap),
                    "same": await baseline_same_activities(dev, rules, instances, args.sequential, args.gap)}

        print(f"[fleet_storm] dev ready at {dev.temporal}; seeded {len(instances)} instances; baseline 1", file=sys.stderr)
        before = await measure_baselines()
        gov_before = await governor_histories(client)
        print(f"[fleet_storm] {mode}", file=sys.stderr)
        measured = await with_costs(sequential(client, dev, instances, args.sequential, args.timeout, args.gap)
                                  if args.sequential else storm(client, dev, instances, args.timeout))
        gov_after = await governor_histories(client)
        print("[fleet_storm] baseline 2", file=sys.stderr)
        after = await measure_baselines()
        baselines = [before["bare"], after["bare"]]
        # An event carries a whole whitelist when it is over 50 KB, or, for a small generated
        # whitelist, over its YAML size (the serialized model, with defaults, is larger).
        threshold = min(ANNOUNCEMENT_BYTES, wl.stat().st_size)
        governor = governor_figures(gov_before, gov_after, measured["accepted"], threshold)
    finally:
        code = dev.stop()
        findings = dev.findings()
        if code not in (0, None):
            print(f"[fleet_storm] selfheal dev exited with {code}; stderr tail:\n{dev.err_tail()}", file=sys.stderr)
    res = {"mode": mode, "gap_s": args.gap if args.sequential else None, "n": args.n, "entries": args.entries, "commit": source.describe,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "whitelist_bytes": wl.stat().st_size, mode: measured, "baselines": baselines,
           "governor": governor, "dev_exit": code, "dev_log": findings}
    if args.sequential:
        res["same_activities"] = same = [before["same"], after["same"]]
        incident = measured["alert_to_executor_p50_s"]
        for name, runs in (("baseline", baselines), ("same_activities", same)):
            pooled = [v for b in runs for v in b["start_to_executor_samples_s"]]
            res |= {f"{name}_pooled_p50_s": pct(pooled, 50), f"{name}_pooled_p90_s": pct(pooled, 90)}
            res[f"ratio_{name}"] = incident / res[f"{name}_pooled_p50_s"] if incident else None
        res["ratio"] = res["ratio_same_activities"]
    else:
        res["baseline_median"] = median = {k: statistics.median(b[k] for b in baselines)
                                           for k, v in baselines[0].items() if isinstance(v, (int, float))}
        res["ratio"] = measured["last_acted_s"] / median["last_finished_s"] if measured["last_acted_s"] else None
        res["same_activities"] = same = [before["same"], after["same"]]
        res["same_activities_last_executor_s"] = statistics.median(x["last_executor_s"] for x in same)
        res["ratio_same_activities"] = (measured["last_acted_s"] / res["same_activities_last_executor_s"]
                                        if measured["last_acted_s"] else None)
        res["world_only"] = world = [before["world"], after["world"]]
        res["world_only_last_executor_s"] = statistics.median(x["last_executor_s"] for x in world)
        res["ratio_world_only"] = (measured["last_acted_s"] / res["world_only_last_executor_s"]
                                   if measured["last_acted_s"] else None)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="services, each alerting once (default 200)")
    parser.add_argument("--entries", type=int, default=500, help="whitelist entries in all (default 500)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for every incident's outcome")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (printed)")
    parser.add_argument("--ref", help="run selfheal from this git ref (git archive, staged in the temp dir) instead of "
                                      "the working tree: for a tree that others are editing")
    parser.add_argument("--sequential", type=int, metavar="K",
                        help="instead of the storm: K services alert one after the other, each once the previous "
                             "incident's executor started (one incident on a quiet machine); baseline: K bare workflows "
                             "one after the other")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="with --sequential: seconds between one executor's start and the next post (default 0)")
    parser.add_argument("--rounds", type=int, default=1, metavar="R",
                        help="repeat the whole measurement R times, each on a fresh selfheal dev, and print the median "
                             "of each ratio across rounds (this machine's ratios move by a quarter between runs)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.entries < args.n:
        parser.error("--entries must be at least --n")
    if args.sequential is not None and not 0 < args.sequential <= args.n:
        parser.error("--sequential K needs 0 < K <= --n (each alert is a different service)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rounds = []
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f"[fleet_storm] round {r + 1} of {args.rounds}", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix="fleet-storm-"))
        try:
            res = asyncio.run(run(args, tmp))
        finally:
            if args.keep:
                print(f"[fleet_storm] data kept in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        rounds.append(res)
        if not args.json:  # each round's report as it ends: a long run shows its progress
            print(report_sequential(res) if args.sequential else report(res), flush=True)
    if args.json:
        print(json.dumps(rounds[0] if args.rounds == 1 else {"rounds": rounds, "medians": ratio_medians(rounds)},
                         indent=2, default=str))
    elif args.rounds > 1:
        print(rounds_summary(rounds))


# Each mode's ratios by key: in the storm's result "ratio" is against no-op steps, in the
# sequential one it is the same activities' and no-op steps are "ratio_baseline".
RATIOS = {"storm": (("ratio_same_activities", "same activities"), ("ratio_world_only", "world only"), ("ratio", "no-op steps")),
          "sequential": (("ratio_same_activities", "same activities"), ("ratio_baseline", "no-op steps"))}


def ratio_medians(rounds: list[dict]) -> dict:
    """Each ratio's median across rounds (and its values), over the rounds that measured it."""
    out = {}
    for key, _ in RATIOS[rounds[0]["mode"]]:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            out[key] = {"median": statistics.median(values), "values": values}
    return out


def rounds_summary(rounds: list[dict]) -> str:
    """The medians across rounds: what one run on a shared machine cannot settle."""
    medians = ratio_medians(rounds)
    what = "incident / bare" if rounds[0]["mode"] == "sequential" else "storm last acted / baseline"
    lines = [f"across {len(rounds)} rounds (each on a fresh selfheal dev), {what}, median (each round):"]
    for key, label in RATIOS[rounds[0]["mode"]]:
        if key in medians:
            m = medians[key]
            lines.append(f"  {label}: {m['median']:.2f}x ({', '.join(f'{v:.2f}x' for v in m['values'])})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
