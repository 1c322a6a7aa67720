"""Self-test for the real systemd --user harness (tests/support/systemd_user.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from . import systemd_user as harness
from .systemd_user import SystemdUser, SystemdUserUnavailable, require_systemd_user
from .systemd_user import systemd_user  # noqa: F401  (pytest fixture)

LOOP = 'echo started; while true; do echo "ERROR connection pool exhausted"; sleep 1; done'


def _ps_pids() -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid="], capture_output=True, text=True, check=True)
    return {int(x) for x in out.stdout.split()}


def _ps_lines_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if text in line]


def test_require_skips_without_ci_and_raises_with_ci(monkeypatch):
    monkeypatch.setattr(harness, "SYSTEMD", "/nonexistent/systemd")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/systemd missing"):
        require_systemd_user()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SystemdUserUnavailable, match="/nonexistent/systemd missing"):
        require_systemd_user()


def test_real_manager_restart_and_journal():
    require_systemd_user()
    host_pid1_cgroup = Path("/proc/1/cgroup").read_text()
    run_log_existed = Path("/run/log").exists()
    sd = SystemdUser()
    sd.start()
    try:
        pids = list(sd.pids)
        assert len(pids) == 3 and all(pids)
        tmpdir, host_cgroups = sd.tmpdir, list(sd.host_cgroups)

        # cgroup isolation: the manager lives below our private cgroup; the
        # host's other processes are untouched
        manager_cg = Path(f"/proc/{sd.manager_pid}/cgroup").read_text()
        assert all(cg.name in manager_cg for cg in host_cgroups)
        assert Path("/proc/1/cgroup").read_text() == host_pid1_cgroup

        sd.install_unit("demo.service", SystemdUser.simple_service(LOOP))
        sd.wait_until(lambda: sd.show("demo.service", "ActiveState")["ActiveState"] == "active")

        # a plain subprocess with the prefix (what an injected runner would do)
        proc = subprocess.run(
            sd.command_prefix + ["systemctl", "--user", "is-active", "demo.service"],
            capture_output=True, text=True,
        )
        assert proc.stdout.strip() == "active", proc

        props = ("InvocationID", "NRestarts", "ActiveEnterTimestampMonotonic", "MainPID")
        before = sd.show("demo.service", *props)
        assert len(before["InvocationID"]) == 32
        assert before["NRestarts"] == "0"
        assert int(before["ActiveEnterTimestampMonotonic"]) > 0
        unit_pids = {int(before["MainPID"])}

        def pool_lines():
            return [
                e for e in sd.journal_entries("demo.service")
                if e.get("MESSAGE") == "ERROR connection pool exhausted"
            ]

        lines = sd.wait_until(pool_lines)
        entry = lines[0]
        assert entry["_SYSTEMD_USER_UNIT"] == "demo.service"
        assert entry["_SYSTEMD_UNIT"] == "user@0.service"
        assert entry["_TRANSPORT"] == "stdout"
        assert entry["_PID"] == before["MainPID"]

        subprocess.run(
            sd.command_prefix + ["systemctl", "--user", "restart", "demo.service"], check=True
        )
        after = sd.show("demo.service", *props)
        assert after["InvocationID"] != before["InvocationID"]
        assert int(after["ActiveEnterTimestampMonotonic"]) > int(before["ActiveEnterTimestampMonotonic"])
        assert after["NRestarts"] == "0"  # manual restarts are not counted
        unit_pids.add(int(after["MainPID"]))

        # manager's own job messages carry USER_UNIT + USER_INVOCATION_ID
        started = sd.wait_until(lambda: [
            e for e in sd.journal_entries("demo.service")
            if e.get("USER_UNIT") == "demo.service"
            and e.get("USER_INVOCATION_ID") == after["InvocationID"]
            and e.get("JOB_TYPE") in ("start", "restart") and e.get("JOB_RESULT") == "done"
        ])
        assert started

        # journalctl inside the namespace (no -D needed there); --sync only works there
        sd.journalctl("--sync", ns=True)
        out = sd.journalctl("-o", "json", "--user-unit", "demo.service", ns=True).stdout
        ns_msgs = [json.loads(line).get("MESSAGE") for line in out.splitlines()]
        assert "ERROR connection pool exhausted" in ns_msgs
        # --user only opens user-<uid>.journal files; uid 0 logs to system.journal
        assert sd.journalctl("-o", "json", "--user", check=False).stdout.strip() == ""
    finally:
        sd.stop()

    print(f"\nstart={sd.start_seconds:.3f}s stop={sd.stop_seconds:.3f}s")
    assert sd.leaked_pids == []
    alive = _ps_pids()
    assert not (set(pids) | unit_pids) & alive
    assert _ps_lines_mentioning(str(tmpdir)) == []
    assert not tmpdir.exists()
    assert not any(cg.exists() for cg in host_cgroups)
    assert Path("/run/log").exists() == run_log_existed  # journald stayed in journal_dir
    assert sd.start_seconds < 10 and sd.stop_seconds < 10
    sd.stop()  # idempotent


def test_nrestarts_counts_automatic_restarts(systemd_user):
    sd = systemd_user
    sd.install_unit(
        "crashy.service",
        "[Unit]\nStartLimitIntervalSec=0\n\n"
        + SystemdUser.simple_service("echo boom; exit 3", Restart="always", RestartSec="100ms"),
    )
    first = sd.show("crashy.service", "InvocationID")["InvocationID"]

    def restarted_twice():
        s = sd.show("crashy.service", "NRestarts", "InvocationID")
        return s if int(s["NRestarts"]) >= 2 else None

    state = sd.wait_until(restarted_twice)
    assert state["InvocationID"] != first

    def booms():
        found = [e for e in sd.journal_entries("crashy.service") if e.get("MESSAGE") == "boom"]
        return found if len(found) >= 2 else None

    booms = sd.wait_until(booms)
    assert all(e["_SYSTEMD_USER_UNIT"] == "crashy.service" for e in booms)
    assert len({e["_PID"] for e in booms}) >= 2


CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from systemd_user import SystemdUser
    sd = SystemdUser().start()
    sd.install_unit("demo.service", SystemdUser.simple_service("while true; do sleep 1; done"))
    main = int(sd.show("demo.service", "MainPID")["MainPID"])
    print(json.dumps({"pids": sd.pids + [main], "tmp": str(sd.tmpdir),
                      "cgroups": [str(c) for c in sd.host_cgroups]}), flush=True)
    os._exit(0)  # die without stop(): the launcher must notice stdin EOF
    """
)


def test_daemons_die_when_test_process_dies():
    require_systemd_user()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        SystemdUser.wait_until(lambda: not set(info["pids"]) & _ps_pids(), timeout=15)
    finally:
        # the dead process could not clean its dirs; do it here
        for root in info["cgroups"]:
            for dirpath, _, _ in os.walk(root, topdown=False):
                SystemdUser.wait_until(lambda: _try_rmdir(Path(dirpath)), timeout=5)
        shutil.rmtree(info["tmp"], ignore_errors=True)
    assert _ps_lines_mentioning(info["tmp"]) == []


def _try_rmdir(d: Path) -> bool:
    try:
        d.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def test_stop_kills_units_that_ignore_sigterm():
    require_systemd_user()
    sd = SystemdUser(stop_timeout=1.0)  # shorter than the manager's 5s stop timeout
    with sd:
        sd.install_unit(
            "stubborn.service",
            SystemdUser.simple_service('trap "" TERM; while true; do sleep 0.2; done'),
        )
        pids = sd.pids + [int(sd.show("stubborn.service", "MainPID")["MainPID"])]
    assert sd.leaked_pids == []
    assert not set(pids) & _ps_pids()  # also no zombies: the manager reaped its units
