"""selfheal through a real TLS front: nginx in front of the dev server, as a secured cluster.

The worker, the ingress and the CLI run as users run them (processes, the test stops each
by its pid) and reach Temporal only through nginx (tests/support/nginx.py), with
certificates the test made (tests/support/certs.py):

- mutual TLS: with the right client certificate an alert posted to the ingress becomes an
  incident that a person approves with ``selfheal approve`` and that heals a real systemd
  unit. The worker is configured by ``TEMPORAL_TLS_*`` variables, the ingress by
  ``--tls-*`` flags, the CLI by the variables, so every path is exercised.
- without a client certificate, or with one from a CA nobody trusts, the worker refuses to
  start, says where and why, and never polls; the ingress answers 503 (its sender retries).
- a TOML profile (``TEMPORAL_CONFIG_FILE`` + ``TEMPORAL_PROFILE``, or ``--config-file`` +
  ``--profile``) names the same front and certificates.
- an API key from a file (``TEMPORAL_API_KEY_FILE``) gets a worker polling through the
  front that requires it; a wrong key is refused and never printed.
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
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from selfheal.contract import AuditRecord
from tests.ingress.payloads import alertmanager, body, prom_alert
from tests.ingress.served import free_port
from tests.support.certs import Issued, Pki
from tests.support.nginx import Nginx
from tests.workflows.helpers import rules_yaml, wait_for, wait_status, whitelist_yaml
from tests.workflows.test_metrics_prometheus import answering, selfheal_process
from tests.workflows.test_worker_process import stop

ROOT = Path(__file__).resolve().parents[2]
API_KEY = f"tls-test-key-{uuid.uuid4().hex}"
TOKEN = "tls-test-ingress-token"
REFUSED_WITHIN = 30.0  # seconds for a worker that cannot connect to say so and exit
SERVICE = "/temporal.api.workflowservice.v1.WorkflowService/"
CALLED_BY = {  # calls only one of the processes makes, as nginx logs them
    f"{SERVICE}SignalWithStartWorkflowExecution": "the ingress",
    f"{SERVICE}RespondActivityTaskCompleted": "the worker",
    f"{SERVICE}UpdateWorkflowExecution": "selfheal approve",
}
VERIFIED = 'verify=SUCCESS subject="CN=selfheal-worker,O=selfheal tests"'


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def front(temporal_env, pki):
    with Nginx(pki, temporal_env.client.service_client.config.target_host, API_KEY) as nginx:
        yield nginx


@pytest.fixture(autouse=True)
def _only_what_the_test_says(monkeypatch, tmp_path):
    """The processes inherit this environment: no TEMPORAL_* of the machine's, and an empty
    config file, so a default profile in the user's home cannot change the route."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "no-profiles.toml"
    empty.write_text("")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(empty))


def mtls_env(front: Nginx, pki: Pki, client: Issued | None = None) -> dict[str, str]:
    """The mutual-TLS front, as TEMPORAL_* variables; ``client`` None: no certificate at all."""
    env = {"TEMPORAL_ADDRESS": front.mtls, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca.cert)}
    if client is not None:
        env |= {"TEMPORAL_TLS_CLIENT_CERT_PATH": str(client.cert), "TEMPORAL_TLS_CLIENT_KEY_PATH": str(client.key)}
    return env


def worker_files(tmp: Path, unit: str, task_queue: str, prefix: list[str] | None = None) -> dict[str, str]:
    (tmp / "wl.yaml").write_text(whitelist_yaml(unit))
    (tmp / "rules.yaml").write_text(rules_yaml(unit))
    return {"SELFHEAL_TASK_QUEUE": task_queue, "SELFHEAL_WHITELIST": str(tmp / "wl.yaml"),
            "SELFHEAL_DIAGNOSIS": str(tmp / "rules.yaml"), "SELFHEAL_COMMAND_PREFIX": shlex.join(prefix or [])}


async def selfheal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A ``selfheal`` command run to its end (the CLI as a person runs it)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


async def pollers(client, task_queue: str) -> list[str]:
    """Identities (``PID@host``) that polled the task queue for workflow tasks, as Temporal saw them."""
    answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
    return [p.identity for p in answer.pollers]


async def polling(client, task_queue: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until Temporal has seen this very process poll (its identity starts with its pid)."""

    async def probe():
        assert proc.poll() is None, f"the worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        return any(identity.startswith(f"{proc.pid}@") for identity in await pollers(client, task_queue))

    await wait_for(probe, timeout=30, interval=0.2)


def refused_worker(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "selfheal.cli", "worker", *args], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=REFUSED_WITHIN * 2, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - began


def oneline(text: str) -> str:
    """Rich wraps long lines on stderr: join them back to assert on the words."""
    return " ".join(text.split())


# --- mutual TLS ------------------------------------------------------------------------------

async def test_with_the_client_certificate_an_alert_heals_through_nginx_and_the_cli_approves(
        temporal_env, task_queue, tmp_path, unit, systemd_user, front, pki):
    client = temporal_env.client
    cli_env = mtls_env(front, pki, pki.client) | {"SELFHEAL_TASK_QUEUE": task_queue}  # this deployment's governor
    token_file = tmp_path / "alertmanager-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    worker_log, ingress_log = tmp_path / "worker.log", tmp_path / "ingress.log"
    # The worker by TEMPORAL_TLS_* variables, the ingress by --tls-* flags (server name too).
    worker = selfheal_process(["worker"], {**cli_env, **worker_files(tmp_path, unit.name, task_queue,
                                                                       systemd_user.ns_command_prefix)}, worker_log)
    ingress = selfheal_process([
        "ingress", "--host", "127.0.0.1", "--port", str(port), "--task-queue", task_queue, "--address", front.mtls,
        "--tls-cert-path", str(pki.client.cert), "--tls-key-path", str(pki.client.key),
        "--tls-ca-path", str(pki.ca.cert), "--tls-server-name", "localhost",
    ], {"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN_FILE": str(token_file)}, ingress_log)
    try:
        await polling(client, task_queue, worker, worker_log)
        await answering(f"http://127.0.0.1:{port}/healthz", ingress, ingress_log)
        async with httpx.AsyncClient() as http:
            sent = await http.post(
                f"http://127.0.0.1:{port}/v1/alerts/alertmanager",
                content=body(alertmanager(prom_alert(alertname="ApiSlow", fingerprint=uuid.uuid4().hex[:16]))),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=30)
        assert sent.status_code == 202, (sent.text, ingress_log.read_text()[-3000:])
        [incident] = sent.json()["incidents"]
        handle = client.get_workflow_handle(incident["id"], result_type=AuditRecord)
        await wait_status(handle, "awaiting_approval", timeout=60)  # service tier: one person approves

        listed = await selfheal("incidents", env=cli_env)
        assert listed.returncode == 0 and incident["id"] in listed.stdout, listed.stderr
        shown = await selfheal("show", incident["id"], env=cli_env)
        assert shown.returncode == 0 and "open, awaiting_approval" in shown.stdout, shown.stderr
        approved = await selfheal("approve", incident["id"], "--as", "alice", "--unsigned", env=cli_env)
        assert approved.returncode == 0, approved.stdout + approved.stderr

        record = await asyncio.wait_for(handle.result(), 60)
        assert record.outcome == "remediated", (record.outcome_detail, worker_log.read_text()[-3000:])
        assert [(a.approver, a.kind, a.via, a.channel) for a in record.approvals] == [
            ("alice", "approved", "update", "unverified")]
        assert unit.start_count() == 2  # the install, and the one restart the approval allowed
        final = await selfheal("show", incident["id"], "--json", env=cli_env)
        assert final.returncode == 0 and AuditRecord.model_validate_json(final.stdout).outcome == "remediated"
        # What crossed the front, each call with the client certificate nginx verified: the
        # ingress's start, the worker's activities, the CLI's approval.
        crossed = [call for call in front.calls() if call.split()[0] in CALLED_BY]
        assert {call.split()[0] for call in crossed} == set(CALLED_BY), front.calls()
        assert all(call.endswith(f" 200 {VERIFIED}") for call in crossed), crossed
    finally:
        codes = [stop(worker), stop(ingress)]
    assert codes == [0, 0], (worker_log.read_text()[-2000:], ingress_log.read_text()[-2000:])
    assert f"connecting to Temporal at {front.mtls} namespace default (mutual TLS)" in worker_log.read_text()


@pytest.mark.parametrize("certificate, verdict", [(None, "NONE"), ("stranger", "FAILED:")],
                         ids=["no-certificate", "untrusted-ca"])
async def test_without_a_trusted_client_certificate_the_worker_refuses_to_start_and_never_polls(
        certificate, verdict, temporal_env, task_queue, tmp_path, front, pki):
    env = {**mtls_env(front, pki, getattr(pki, certificate) if certificate else None),
           **worker_files(tmp_path, "x.service", task_queue)}
    result, took = await asyncio.to_thread(refused_worker, env)
    output = oneline(result.stderr + result.stdout)

    assert result.returncode == 2, output
    assert took < REFUSED_WITHIN
    assert f"refusing to start: cannot reach Temporal at {front.mtls} namespace default" in output
    assert "Unauthenticated" in output and f"client certificate refused by the TLS front: {verdict}" in output
    assert "worker polling" not in output
    assert await pollers(temporal_env.client, task_queue) == []


async def test_without_a_client_certificate_the_ingress_answers_503_so_the_sender_retries(
        temporal_env, task_queue, tmp_path, front, pki):
    port, log = free_port(), tmp_path / "ingress.log"
    ingress = selfheal_process(["ingress", "--host", "127.0.0.1", "--port", str(port), "--task-queue", task_queue,
                                "--address", front.mtls, "--tls-ca-path", str(pki.ca.cert)],
                               {"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN": TOKEN}, log)
    fingerprint = uuid.uuid4().hex[:16]
    try:
        await answering(f"http://127.0.0.1:{port}/healthz", ingress, log)
        async with httpx.AsyncClient() as http:
            sent = await http.post(
                f"http://127.0.0.1:{port}/v1/alerts/alertmanager",
                content=body(alertmanager(prom_alert(alertname="ApiSlow", fingerprint=fingerprint))),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=30)
    finally:
        code = stop(ingress)
    assert sent.status_code == 503, sent.text
    assert sent.headers["Retry-After"] and sent.json()["retry"] is True
    assert "client certificate refused by the TLS front: NONE" in sent.json()["error"]
    assert code == 0, log.read_text()[-2000:]
    assert "Temporal not reachable at start" in log.read_text()
    # Nothing reached Temporal: no incident was started for the alert.
    assert [w async for w in temporal_env.client.list_workflows(f'TaskQueue = "{task_queue}"')] == []


# --- a TOML profile ------------------------------------------------------------------------------

def write_profile(path: Path, name: str, front: Nginx, pki: Pki) -> Path:
    path.write_text(f"""
[profile.{name}]
address = "{front.mtls}"
namespace = "default"

[profile.{name}.tls]
client_cert_path = "{pki.client.cert}"
client_key_path = "{pki.client.key}"
server_ca_cert_path = "{pki.ca.cert}"
server_name = "localhost"
""")
    return path


async def test_a_toml_profile_reaches_temporal_through_nginx(temporal_env, task_queue, tmp_path, front, pki):
    config = write_profile(tmp_path / "temporal.toml", "through-nginx", front, pki)
    # The CLI by TEMPORAL_CONFIG_FILE + TEMPORAL_PROFILE, nothing else.
    profile_env = {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "through-nginx",
                   "SELFHEAL_TASK_QUEUE": task_queue}  # a deployment of its own, not one a test left behind

    def lists() -> int:
        return sum(call.startswith(f"{SERVICE}ListWorkflowExecutions ") and call.endswith(VERIFIED) for call in front.calls())

    before = lists()
    listed = await selfheal("incidents", "--all", "--limit", "1", env=profile_env)
    assert listed.returncode == 0, listed.stderr
    assert "all incidents" in listed.stdout and "cannot reach" not in listed.stdout + listed.stderr
    assert lists() == before + 1  # the list crossed the front, with the profile's certificate

    # The worker by --config-file and --profile: it polls, through the front.
    log = tmp_path / "worker.log"
    worker = selfheal_process(["worker", "--config-file", str(config), "--profile", "through-nginx"],
                              worker_files(tmp_path, "x.service", task_queue), log)
    try:
        await polling(temporal_env.client, task_queue, worker, log)
    finally:
        code = stop(worker)
    assert code == 0, log.read_text()[-2000:]
    assert f"connecting to Temporal at {front.mtls} namespace default (mutual TLS)" in log.read_text()


# --- an API key ------------------------------------------------------------------------------------

async def test_an_api_key_from_a_file_gets_the_worker_polling_through_the_front(temporal_env, task_queue, tmp_path, front, pki):
    key_file = tmp_path / "temporal-api-key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    log = tmp_path / "worker.log"
    worker = selfheal_process(["worker"], {
        "TEMPORAL_ADDRESS": front.api_key_address, "TEMPORAL_API_KEY_FILE": str(key_file),
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca.cert), "TEMPORAL_TLS_SERVER_NAME": "localhost",
        **worker_files(tmp_path, "x.service", task_queue)}, log)
    try:
        await polling(temporal_env.client, task_queue, worker, log)
    finally:
        code = stop(worker)
    assert code == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert f"connecting to Temporal at {front.api_key_address} namespace default (TLS, API key)" in text
    assert API_KEY not in text


async def test_a_wrong_api_key_is_refused_and_never_printed(temporal_env, task_queue, tmp_path, front, pki):
    wrong = f"wrong-key-{uuid.uuid4().hex}"
    key_file = tmp_path / "temporal-api-key"
    key_file.write_text(wrong)
    env = {"TEMPORAL_ADDRESS": front.api_key_address, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca.cert),
           **worker_files(tmp_path, "x.service", task_queue)}
    result, took = await asyncio.to_thread(refused_worker, env, "--api-key-file", str(key_file))
    output = oneline(result.stderr + result.stdout)

    assert result.returncode == 2, output
    assert took < REFUSED_WITHIN
    assert f"refusing to start: cannot reach Temporal at {front.api_key_address} namespace default (TLS, API key)" in output
    assert "Unauthenticated" in output and "API key refused by the TLS front" in output
    assert wrong not in output and API_KEY not in output
    assert await pollers(temporal_env.client, task_queue) == []
