"""SshRunner against a real OpenSSH server on loopback, and through it a real systemd --user.

The server (tests/support/sshd.py) accepts one generated client key; the tests log in as
root, which lets ``nsenter`` from the remote shell enter the systemd harness's namespace,
exactly as the local tests do without SSH.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from selfheal.activities.evidence import EvidenceReader
from selfheal.activities.remediate import SystemdRemediator
from selfheal.activities.routing import RunnersConfig, build_runner
from selfheal.activities.targets import SshTarget
from selfheal.activities.runner import UnreachableHost
from selfheal.activities.ssh_runner import SshConnectError, SshRunner
from selfheal.activities.systemd import journal_lines, unit_state
from selfheal.contract import ActionRequest, RemediationInput
from selfheal.whitelist import load_whitelist_bytes, target_of
from tests.support.sshd import Sshd, free_port, keygen
from tests.support.sshd import sshd  # noqa: F401  (pytest fixture)
from tests.support.waiting import wait_until
from tests.workflows.helpers import whitelist_yaml

HOST = "web-1"  # a host label; the address below is what the runner dials


def target(server: Sshd, known_hosts: Path, **overrides) -> SshTarget:
    fields = dict(user=server.user, port=server.port, address="127.0.0.1", key=server.client_key,
                  known_hosts=known_hosts, privileged_prefix=[])
    return SshTarget(**{**fields, **overrides})


@pytest.fixture
def pinned(sshd, tmp_path) -> Path:
    return sshd.write_known_hosts(tmp_path / "known_hosts")


@pytest.fixture
async def ssh(sshd, pinned):
    runner = SshRunner(target(sshd, pinned))
    yield runner
    await runner.close()


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


# --- argv exactness ----------------------------------------------------------------

async def test_argv_arrives_exactly_and_no_shell_interprets_it(ssh, tmp_path):
    marker, marker2 = tmp_path / "dollar", tmp_path / "backtick"
    hostile = f"two words 'single' \"double\"; echo pwned $(touch {marker}) `touch {marker2}` | cat > x\nsecond line \\ * ~ &"
    argv = ["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", hostile, "", "-n", "$HOME", "*"]
    result = await ssh.run(HOST, argv, timeout=30)
    assert result.ok, result
    assert json.loads(result.stdout) == [hostile, "", "-n", "$HOME", "*"]
    assert result.argv == tuple(argv)
    assert not marker.exists() and not marker2.exists()

    printed = await ssh.run(HOST, ["printf", "%s\\n", hostile], timeout=30)
    assert printed.stdout == hostile + "\n"


async def test_exit_status_and_both_streams_come_back(ssh):
    result = await ssh.run(HOST, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok


async def test_privileged_prefix_only_for_privileged_commands(sshd, pinned):
    runner = SshRunner(target(sshd, pinned, prefix=["env", "A=plain"], privileged_prefix=["env", "PRIV=yes"]))
    try:
        argv = ["sh", "-c", 'echo "$A ${PRIV:-no}"']
        assert (await runner.run(HOST, argv)).stdout == "plain no\n"
        assert (await runner.run(HOST, argv, privileged=True)).stdout == "plain yes\n"
        assert runner.remote_command(["systemctl", "restart", "a b"], privileged=True) == "env A=plain env PRIV=yes systemctl restart 'a b'"
    finally:
        await runner.close()


async def test_output_is_bounded_and_the_exit_status_still_real(sshd, pinned):
    runner = SshRunner(target(sshd, pinned), max_output=1000)
    try:
        script = "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('y' * 300000); sys.exit(4)"
        result = await runner.run(HOST, ["python3", "-c", script], timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (4, "x" * 1000, "y" * 1000)
    finally:
        await runner.close()


# --- connections ----------------------------------------------------------------------

async def test_one_connection_per_host_shared_by_concurrent_commands_and_reopened_when_dropped(sshd, ssh):
    logins = sshd.accepted_logins()
    results = await asyncio.gather(*(ssh.run(HOST, ["echo", str(i)], timeout=30) for i in range(6)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert sshd.accepted_logins() == logins + 1

    # The server drops the connection (its session process dies): the next command reconnects.
    for pid in sshd.session_pids():
        _signal(pid, signal.SIGTERM)
    wait_until(lambda: not sshd.session_pids(), timeout=5)
    assert (await ssh.run(HOST, ["echo", "again"], timeout=30)).stdout == "again\n"
    assert sshd.accepted_logins() == logins + 2


@pytest.mark.parametrize("privileged", [False, True])
async def test_a_stale_connection_is_replaced_without_running_the_command_twice(sshd, ssh, tmp_path, caplog, privileged):
    caplog.set_level(logging.INFO, logger="selfheal.activities.ssh_runner")
    await ssh.run(HOST, ["true"])
    logins = sshd.accepted_logins()
    # Drop the server side without the client noticing yet (no await between): the channel
    # open on the old connection fails before any exec was sent, so even a restart is
    # safely tried again on a new connection.
    for pid in sshd.session_pids():
        _signal(pid, signal.SIGKILL)
    count = tmp_path / "count"
    result = await ssh.run(HOST, ["sh", "-c", f"echo x >> {count}"], timeout=30, privileged=privileged)
    assert result.ok
    assert count.read_text() == "x\n"
    assert sshd.accepted_logins() == logins + 1
    assert "went stale" in caplog.text


async def test_timeout_raises_quickly_and_leaves_the_connection_usable(sshd, ssh):
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await ssh.run(HOST, ["sleep", "30"], timeout=1)
    elapsed = time.monotonic() - started
    print(f"\ntimeout after {elapsed:.2f}s")
    assert elapsed < 5
    assert (await ssh.run(HOST, ["echo", "still here"], timeout=30)).stdout == "still here\n"
    # The runner asked sshd to SIGTERM the command, but OpenSSH refuses session signals
    # for root logins ("session signalling requires privilege separation"), so as root the
    # sleep may outlive its channel. Stop it here by its own pid.
    for pid in sshd.session_pids():
        if _cmdline(pid) == ["sleep", "30"]:
            _signal(pid, signal.SIGTERM)


# --- trust and failures -----------------------------------------------------------------

@pytest.mark.parametrize("known", ["other key", "empty"])
async def test_a_host_key_that_is_not_pinned_is_refused_and_nothing_runs(sshd, tmp_path, known):
    known_hosts = tmp_path / "known_hosts"
    if known == "other key":
        sshd.write_known_hosts(known_hosts, key=keygen(tmp_path / "impostor"))
    else:
        known_hosts.write_text("")
    marker = tmp_path / "ran"
    runner = SshRunner(target(sshd, known_hosts))
    logins = sshd.accepted_logins()
    try:
        with pytest.raises(UnreachableHost) as info:
            await runner.run(HOST, ["touch", str(marker)], timeout=30)
    finally:
        await runner.close()
    message = str(info.value)
    assert HOST in message and str(known_hosts) in message and "not pinned" in message
    assert not marker.exists()
    assert sshd.accepted_logins() == logins


async def test_keys_are_pinned_per_name(sshd, tmp_path):
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", "localhost")
    by_name = SshRunner(target(sshd, known_hosts, address=None))  # dials the host name itself
    by_address = SshRunner(target(sshd, known_hosts))  # dials 127.0.0.1, pinned under no name of its own
    try:
        assert (await by_name.run("localhost", ["echo", "ok"], timeout=30)).stdout == "ok\n"
        with pytest.raises(UnreachableHost, match="not pinned"):
            await by_address.run("localhost", ["echo", "ok"], timeout=30)
    finally:
        await by_name.close()
        await by_address.close()


async def test_missing_known_hosts_file_is_refused(sshd, tmp_path):
    runner = SshRunner(target(sshd, tmp_path / "nope"))
    with pytest.raises(UnreachableHost, match="known_hosts file .*nope is missing"):
        await runner.run(HOST, ["true"])


async def test_a_refused_key_is_unreachable(sshd, pinned, tmp_path):
    keygen(tmp_path / "stranger")
    runner = SshRunner(target(sshd, pinned, key=tmp_path / "stranger"))
    with pytest.raises(UnreachableHost, match="stranger was refused"):
        await runner.run(HOST, ["true"])


async def test_a_closed_port_is_a_retryable_connection_error(sshd, pinned):
    runner = SshRunner(target(sshd, pinned, port=free_port()))
    with pytest.raises(SshConnectError) as info:
        await runner.run(HOST, ["true"])
    assert isinstance(info.value, ConnectionError) and not isinstance(info.value, UnreachableHost)


async def test_a_server_that_never_answers_times_out_as_a_retryable_error(sshd, pinned):
    with socket.socket() as silent:  # accepts TCP (the kernel's backlog) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        runner = SshRunner(target(sshd, pinned, port=silent.getsockname()[1], connect_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(SshConnectError, match="TimeoutError"):
            await runner.run(HOST, ["true"])
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "root@web-1", "web 1", "web-1\n", ""])
async def test_hostile_host_names_are_refused_before_connecting(ssh, sshd, host):
    logins = sshd.accepted_logins()
    with pytest.raises(UnreachableHost, match="refusing host name"):
        await ssh.run(host, ["true"])
    assert sshd.accepted_logins() == logins


# --- systemd through SSH ------------------------------------------------------------------

async def test_systemd_through_ssh_reads_restarts_once_and_reads_the_journal(sshd, pinned, systemd_user, unit, runner, tmp_path):
    config_file = tmp_path / "runners.yaml"
    config_file.write_text(json.dumps({"runners": [{  # JSON is YAML
        "hosts": "localhost",
        "ssh": {
            "user": sshd.user, "port": sshd.port, "address": "127.0.0.1",
            "key": str(sshd.client_key), "known_hosts": pinned.name,  # relative: next to the file
            "prefix": systemd_user.ns_command_prefix,
            "privileged_prefix": [],  # we are root; in production this is sudo -n
        },
    }]}))
    via_ssh = build_runner(RunnersConfig.load(config_file))
    try:
        local_state = await unit_state(runner, "localhost", "user", unit.name)
        ssh_state = await unit_state(via_ssh, "localhost", "user", unit.name)
        assert ssh_state == local_state and len(ssh_state.invocation_id) == 32

        loaded = load_whitelist_bytes(whitelist_yaml(unit.name).encode(), "test.yaml")
        request = ActionRequest(entry_id="restart-api", target=target_of(loaded.whitelist.entry("restart-api")))
        baseline = await ActivityEnvironment().run(EvidenceReader(via_ssh, loaded).read_unit_state, request)
        assert baseline == local_state

        async def restart():
            inp = RemediationInput(incident_id="i", idempotency_key="i/act/ssh", whitelist_sha256=loaded.sha256,
                                   request=request, baseline=baseline)
            return await ActivityEnvironment().run(SystemdRemediator(via_ssh, loaded).restart_unit, inp)

        first, again = await restart(), await restart()
        assert (first.action, again.action) == ("executed", "already_done")
        after_local = await unit_state(runner, "localhost", "user", unit.name)
        assert after_local.invocation_id == first.after.invocation_id != baseline.invocation_id
        assert again.before.invocation_id == first.after.invocation_id
        assert unit.start_count() == 2  # exactly one restart

        since = datetime.now(timezone.utc) - timedelta(hours=1)
        lines = await journal_lines(via_ssh, "localhost", "user", unit.name, since, 200)
        assert "ERROR connection pool exhausted" in lines

        with pytest.raises(UnreachableHost, match="no runner is configured for host 'db-1'"):
            await unit_state(via_ssh, "db-1", "user", unit.name)
    finally:
        await via_ssh.close()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def test_a_missing_sshd_skips_or_fails_under_ci(monkeypatch):
    from tests.support import sshd as harness

    monkeypatch.setattr(harness, "SSHD", "/nonexistent/sshd")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/sshd missing"):
        harness.require_sshd()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="/nonexistent/sshd missing"):
        harness.require_sshd()
