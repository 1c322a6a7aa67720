"""`selfheal dev`: the README's quick start, run as a user runs it."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from selfheal.dev.aws_sim import session
from tests.conftest import require, temporal_binary
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 90.0) -> list[str]:
    lines, pending, deadline = [], b"", time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"selfheal dev exited with {proc.wait()}: {lines}")
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines += [c.decode() for c in complete]
            if any(marker in line for line in lines):
                return lines
    raise AssertionError(f"no {marker!r} within {timeout}s: {lines}")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


def selfheal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_selfheal_dev_heals_the_printed_sample_alert_after_the_printed_approval_and_stops_cleanly(tmp_path):
    from selfheal.dev.aws_sim import moto_binary

    require("curl", None if subprocess.run(["which", "curl"], capture_output=True).returncode == 0 else "curl not installed")
    require("moto_server", None if moto_binary() else "not installed (pip install 'moto[server]')")
    temporal, ui, ingress, aws = free_port(), free_port(), free_port(), free_port()
    data = tmp_path / "devdata"
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli", "dev", "--data-dir", str(data), "--aws-port", str(aws),
         "--temporal-port", str(temporal), "--ui-port", str(ui), "--ingress-port", str(ingress)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(tmp_path / "dev.err").open("w"),
        # A user's Temporal settings pointing elsewhere: dev must ignore every one of them.
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", "TEMPORAL_NAMESPACE": "production",
             "TEMPORAL_API_KEY": "not-for-the-demo", "TEMPORAL_PROFILE": "prod"},
    )
    try:
        lines = read_until(proc, "Ctrl-C stops everything.")
        assert any(f"127.0.0.1:{aws}  LOCAL SIMULATION (moto), not AWS" in line for line in lines), lines
        assert any(line.strip() == f"Temporal:     127.0.0.1:{temporal}" for line in lines), lines
        curl = lines[next(i for i, line in enumerate(lines) if line.startswith("Fire a sample alert")) + 1].strip()
        approve = next(line.strip() for line in lines if line.strip().startswith("selfheal approve INCIDENT_ID --as alice"))
        key = approve.split("--key ")[1].split()[0]
        assert Path(key).exists() and Path(key + ".pub").read_text().split()[1] in (data / "whitelist.yaml").read_text()
        checked = subprocess.run([sys.executable, "-m", "selfheal.cli", "whitelist", "check", str(data / "whitelist.yaml")],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert curl.startswith("curl ") and f"127.0.0.1:{ingress}/v1/alerts/generic" in curl

        fired = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
        assert fired.returncode == 0, fired.stderr
        [incident] = json.loads(fired.stdout)["incidents"]
        assert incident["url"].startswith(f"http://127.0.0.1:{ui}/namespaces/default/workflows/")

        listed = subprocess.run(
            [sys.executable, "-m", "selfheal.cli", "incidents", "--all", "--address", f"127.0.0.1:{temporal}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert incident["id"] in listed.stdout, listed.stdout + listed.stderr
        assert "checkout" in listed.stdout  # the service search attribute
        assert httpx.get(incident["url"], timeout=10).status_code == 200  # the Web UI serves the incident page
        described = subprocess.run(
            [str(temporal_binary()), "operator", "namespace", "describe", "--namespace", "default",
             "--address", f"127.0.0.1:{temporal}", "--output", "json"],
            capture_output=True, text=True, timeout=60,
        )
        retention = json.loads(described.stdout)["config"]["workflowExecutionRetentionTtl"]
        assert retention == f"{30 * 24 * 3600}s"  # re-deliveries are recognised for 30 days

        # The heal: the rollback waits for a person; the printed approve line rolls it back
        # in the simulation, and verification passes within 2 minutes.
        def show() -> dict:
            shown = selfheal("show", incident["id"], "--json", "--address", f"127.0.0.1:{temporal}")
            return json.loads(shown.stdout) if shown.returncode == 0 else {}

        waiting = wait_until(lambda: show().get("status") == "awaiting_approval" and show(), timeout=60)
        assert waiting["decision"]["entry_id"] == "rollback-checkout"
        cited = [e for h in waiting["diagnosis"]["hypotheses"] for e in h["evidence"] if e["source"] == "aws:ecs:demo/checkout"]
        assert cited and "checkout:7" in " ".join(cited[0]["lines"])  # the bad revision's deployment, read-only
        approved = subprocess.run(["sh", "-c", approve.replace("selfheal ", f"{sys.executable} -m selfheal.cli ", 1)
                                   .replace("INCIDENT_ID", incident["id"])], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0 and "approved by alice" in approved.stdout, approved.stderr
        started = time.monotonic()
        record = wait_until(lambda: (r := show()).get("outcome") and r, timeout=150)
        assert record["outcome"] == "remediated", record["outcome_detail"]
        assert time.monotonic() - started < 120
        assert record["remediation"]["after"]["facts"]["task_definition"] == "checkout:6"
        assert f"[LOCAL AWS SIMULATION at http://127.0.0.1:{aws}, not AWS]" in record["remediation"]["detail"]
        ecs = session(f"http://127.0.0.1:{aws}")("ecs")
        assert ecs.describe_services(cluster="demo", services=["checkout"])["services"][0]["taskDefinition"].endswith("checkout:6")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, (tmp_path / "dev.err").read_text()[-2000:]
    assert (data / "temporal.db").exists()
    assert processes_mentioning(str(data)) == []  # the dev server is gone too
    assert processes_mentioning(f"moto_server -H 127.0.0.1 -p {aws}") == []  # and the AWS simulation


async def test_selfheal_dev_with_a_temporal_profile_runs_against_that_cluster_and_starts_no_server(temporal_env, tmp_path):
    from selfheal.dev.aws_sim import moto_binary

    require("curl", None if subprocess.run(["which", "curl"], capture_output=True).returncode == 0 else "curl not installed")
    require("moto_server", None if moto_binary() else "not installed (pip install 'moto[server]')")
    address = temporal_env.client.service_client.config.target_host
    config = tmp_path / "temporal.toml"
    config.write_text(f'[profile.shared]\naddress = "{address}"\nnamespace = "default"\n')
    ingress, aws, data = free_port(), free_port(), tmp_path / "devdata"
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli", "dev", "--data-dir", str(data), "--aws-port", str(aws),
         "--ingress-port", str(ingress), "--temporal-profile", "shared"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(tmp_path / "dev.err").open("w"),
        env={**os.environ, "TEMPORAL_CONFIG_FILE": str(config)},
    )
    try:
        lines = read_until(proc, "Ctrl-C stops everything.")
        assert any(line.strip() == f"Temporal:     {address} namespace default (profile shared)" for line in lines), lines
        assert not any("Temporal UI:" in line for line in lines)
        curl = lines[next(i for i, line in enumerate(lines) if line.startswith("Fire a sample alert")) + 1].strip()
        fired = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
        assert fired.returncode == 0, fired.stderr
        [incident] = json.loads(fired.stdout)["incidents"]
        # The incident lives on the profile's cluster: the test's own dev server.
        described = await temporal_env.client.get_workflow_handle(incident["id"]).describe()
        assert described.workflow_type == "IncidentWorkflow"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, (tmp_path / "dev.err").read_text()[-2000:]
    assert not (data / "temporal.db").exists()  # no server of its own
    assert processes_mentioning(str(data / "temporal.db")) == []
