"""`selfheal dev`: the README's quick start, run as a user runs it."""

import json
import os
import select
import shlex
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
from tests.support.ports import free_port  # noqa: F401 (its users import it from here)

ROOT = Path(__file__).resolve().parents[1]


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


def selfheal_script() -> list[str]:
    """``selfheal`` as the quick start installs it (.venv/bin/selfheal), else the module."""
    script = Path(sys.executable).parent / "selfheal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "selfheal.cli"]


def stop_dev(proc: subprocess.Popen, timeout: float = 60) -> int:
    """Stop ``selfheal dev`` as Ctrl-C does (it stops its server and simulation); kill it,
    by its own pid, if it has not exited within ``timeout``. Its exit code."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def printed_alerts(lines: list[str]) -> list[tuple[str, str]]:
    """The demo alerts dev prints: (what it heals, the curl line), in order."""
    start = next(i for i, line in enumerate(lines) if line.startswith("Fire the demo alerts"))
    found, what = [], None
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        if line.strip().startswith("# "):
            what = line.strip()[2:]
        else:
            found.append((what, line.strip()))
    return found


def run_as_printed(line: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    # From a directory that is not the checkout, with a PATH that has no selfheal: what a
    # person pastes into a fresh shell after the quick start.
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_selfheal_dev_heals_the_printed_alerts_every_printed_line_runs_as_printed_and_it_stops_cleanly(tmp_path):
    from selfheal.dev.aws_sim import moto_binary

    require("curl", None if subprocess.run(["which", "curl"], capture_output=True).returncode == 0 else "curl not installed")
    require("moto_server", None if moto_binary() else "not installed (pip install 'moto[server]')")
    temporal, ui, ingress, aws, metrics = free_port(), free_port(), free_port(), free_port(), free_port()
    data, elsewhere = tmp_path / "devdata", tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.Popen(
        [*selfheal_script(), "dev", "--data-dir", str(data), "--aws-port", str(aws), "--metrics-port", str(metrics),
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
        assert any(f"127.0.0.1:{metrics}/metrics (worker)" in line for line in lines), lines
        alerts = printed_alerts(lines)
        assert [what.split(":")[0] for what, _ in alerts] == [
            "checkout errors after a bad deploy", "a queue backlog", "a batch host stopped reporting",
            "webhook errors after a release"]
        incidents_line = next(lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("Then list the incidents"))
        assert incidents_line.startswith(selfheal_script()[0])
        assert any(line.startswith("When an incident waits for approval, its approve line") for line in lines), lines
        assert not any("INCIDENT_ID" in line or "--as NAME" in line for line in lines), lines  # no template to fill in
        checked = subprocess.run([sys.executable, "-m", "selfheal.cli", "whitelist", "check", str(data / "whitelist.yaml")],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr

        fired = {}
        for what, curl in alerts:  # every printed alert, as printed
            assert curl.startswith("curl ") and f"127.0.0.1:{ingress}/v1/alerts/generic" in curl
            answer = run_as_printed(curl, elsewhere, timeout=30)
            assert answer.returncode == 0, answer.stderr
            [fired[what]] = json.loads(answer.stdout)["incidents"]
            assert fired[what]["state"] == "delivered", fired[what]
        incident = fired[alerts[0][0]]
        assert incident["url"].startswith(f"http://127.0.0.1:{ui}/namespaces/default/workflows/")

        listed = run_as_printed(incidents_line + " --all", elsewhere)
        assert all(f["id"] in listed.stdout for f in fired.values()), listed.stdout + listed.stderr
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
        def show_of(incident_id: str) -> dict:
            shown = selfheal("show", incident_id, "--json", "--address", f"127.0.0.1:{temporal}")
            return json.loads(shown.stdout) if shown.returncode == 0 else {}

        def show() -> dict:
            return show_of(incident["id"])

        waiting = wait_until(lambda: show().get("status") == "awaiting_approval" and show(), timeout=60)
        assert waiting["decision"]["entry_id"] == "rollback-checkout"
        cited = [e for h in waiting["diagnosis"]["hypotheses"] for e in h["evidence"] if e["source"] == "aws:ecs:demo/checkout"]
        assert cited and "checkout:7" in " ".join(cited[0]["lines"])  # the bad revision's deployment, read-only
        # The incident's own approve lines, printed when it asks: one per demo approver.
        told = read_until(proc, f" approve {shlex.quote(incident['id'])} --as bob ", timeout=60)
        head = next(i for i, line in enumerate(told) if line.startswith(f"{incident['id']} waits for 1 approval(s) of rollback-checkout"))
        approve, as_bob = (line.strip() for line in told[head + 1:head + 3])
        assert approve.startswith(f"{selfheal_script()[0]} approve {shlex.quote(incident['id'])} --as alice --key ")
        assert as_bob.startswith(f"{selfheal_script()[0]} approve {shlex.quote(incident['id'])} --as bob --key ")
        key = approve.split("--key ")[1].split()[0]
        assert Path(key).is_absolute() and Path(key).exists()
        assert Path(key + ".pub").read_text().split()[1] in (data / "whitelist.yaml").read_text()
        approved = run_as_printed(approve, elsewhere)
        assert approved.returncode == 0 and "approved by alice" in approved.stdout, approved.stderr
        # The other three decide on the entry their alert names: the printed batch host is one
        # the simulation has, so its reboot is decided, not refused as an unknown target.
        decided = {what: wait_until(lambda f=f: (r := show_of(f["id"])).get("decision") and r, timeout=60)
                   for what, f in list(fired.items())[1:]}
        assert [d["decision"]["entry_id"] for d in decided.values()] == [
            "scale-queue-workers", "reboot-batch-hosts", "rollback-payments-webhook"], decided
        assert all(d["decision"]["kind"] != "deny" for d in decided.values()), decided
        started = time.monotonic()
        record = wait_until(lambda: (r := show()).get("outcome") and r, timeout=150)
        assert record["outcome"] == "remediated", record["outcome_detail"]
        assert time.monotonic() - started < 120
        assert record["remediation"]["after"]["facts"]["task_definition"] == "checkout:6"
        assert f"[LOCAL AWS SIMULATION at http://127.0.0.1:{aws}, not AWS]" in record["remediation"]["detail"]
        ecs = session(f"http://127.0.0.1:{aws}")("ecs")
        assert ecs.describe_services(cluster="demo", services=["checkout"])["services"][0]["taskDefinition"].endswith("checkout:6")
    finally:
        code = stop_dev(proc)
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
        curl = printed_alerts(lines)[0][1]
        fired = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
        assert fired.returncode == 0, fired.stderr
        [incident] = json.loads(fired.stdout)["incidents"]
        # The incident lives on the profile's cluster: the test's own dev server.
        described = await temporal_env.client.get_workflow_handle(incident["id"]).describe()
        assert described.workflow_type == "IncidentWorkflow"
    finally:
        code = stop_dev(proc)
    assert code == 0, (tmp_path / "dev.err").read_text()[-2000:]
    assert not (data / "temporal.db").exists()  # no server of its own
    assert processes_mentioning(str(data / "temporal.db")) == []


def test_a_port_in_use_is_one_line_naming_it_and_its_flag(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run(
            [sys.executable, "-m", "selfheal.cli", "dev", "--data-dir", str(tmp_path / "d"), "--aws-port", str(port),
             "--temporal-port", str(free_port()), "--ui-port", str(free_port()), "--ingress-port", str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (--aws-port): stop what holds it (an earlier selfheal dev?) or "
        f"pass --aws-port with a free port"], ran.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
