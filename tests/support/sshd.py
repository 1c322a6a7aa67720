"""Test harness: a real OpenSSH server on loopback with its own keys.

    with Sshd() as server:                          # or the ``sshd`` fixture
        server.port, server.client_key              # connect as server.user with this key
        server.write_known_hosts(path)              # "[127.0.0.1]:PORT ssh-ed25519 …"
        server.write_known_hosts(path, "localhost") # … pinned under another name
        server.accepted_logins()                    # how many connections authenticated

Everything lives in one temp dir: host key, client key, ``authorized_keys``, config,
pid file and log (``-e``: the daemon logs to stderr, which goes to ``sshd.log``). The
daemon listens on 127.0.0.1 only, accepts only the generated client key (no passwords,
no PAM), and is stopped by its own pid: SIGTERM, then SIGKILL if it lingers. Session
processes it forked for connections a test left open are stopped by pid too.

``StrictModes no`` because the temp dir is not laid out like a home directory;
``PermitRootLogin prohibit-password`` because the tests run as root (key-only).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.waiting import wait_until
from tests.support.ports import free_port  # noqa: F401 (its users import it from here)

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (owned by root, not group/world-writable)


def sshd_problem() -> str | None:
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} missing (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found on PATH"
    if os.geteuid() != 0:
        return "must run as root (sshd needs its privilege separation setup)"
    return None


def require_sshd() -> None:
    from tests.conftest import require

    require("sshd", sshd_problem())


def keygen(path: Path, comment: str = "selfheal-test") -> str:
    """Create an ed25519 key pair at ``path`` (+ ``.pub``); return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return Path(f"{path}.pub").read_text().strip()


_CONFIG = """\
ListenAddress 127.0.0.1
HostKey {tmp}/host_ed25519
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {tmp}/authorized_keys
AllowUsers {user}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitUserEnvironment no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
LoginGraceTime 20
LogLevel INFO
"""


class Sshd:
    def __init__(self, start_timeout: float = 10.0, stop_timeout: float = 5.0):
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.host_public_key = ""
        self.leftover_sessions: list[int] = []  # session processes still alive at stop()
        self.start_seconds: float | None = None

    # --------------------------------------------------------------- paths/keys
    @property
    def client_key(self) -> Path:
        return self._tmp / "client_ed25519"

    @property
    def log_path(self) -> Path:
        return self._tmp / "sshd.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def _tmp(self) -> Path:
        assert self.tmpdir is not None, "not started"
        return self.tmpdir

    def known_hosts_line(self, *names: str, key: str | None = None) -> str:
        """A known_hosts line pinning the host key (or ``key``) for ``names`` on our port."""
        names = names or ("127.0.0.1",)
        key_type, key_data = (key or self.host_public_key).split()[:2]
        return f"{','.join(f'[{n}]:{self.port}' for n in names)} {key_type} {key_data}\n"

    def write_known_hosts(self, path: Path, *names: str, key: str | None = None) -> Path:
        path.write_text(self.known_hosts_line(*names, key=key))
        return path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def accepted_logins(self) -> int:
        return self.log_text().count("Accepted publickey for ")

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Sshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Sshd":
        problem = sshd_problem()
        if problem:
            raise RuntimeError(problem)
        t0 = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="selfheal-sshd-"))
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
            self.host_public_key = keygen(self._tmp / "host_ed25519", "selfheal-test-host")
            (self._tmp / "authorized_keys").write_text(keygen(self.client_key) + "\n")
            config = self._tmp / "sshd_config"
            config.write_text(_CONFIG.format(tmp=self._tmp, user=self.user))
            for _ in range(5):  # the free port can be taken between probing and binding
                if self._spawn(config):
                    break
            else:
                raise RuntimeError(f"sshd did not start:\n{self.log_text()}")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _spawn(self, config: Path) -> bool:
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        try:
            wait_until(self._ready, timeout=self.start_timeout)
        except TimeoutError:
            pass
        if self.proc.poll() is None and self._ready():
            return True
        self._terminate(self.proc)
        self.proc = None
        return False

    def _ready(self) -> bool:
        """Listening and speaking SSH (the banner proves it is our daemon on that port)."""
        if self.proc is None or self.proc.poll() is not None:
            return True  # stop polling; _spawn sees the exit
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-2.0-OpenSSH")
        except OSError:
            return False

    def session_pids(self) -> list[int]:
        """Processes below the listener: one per open connection, plus their commands."""
        return _descendants(self.pid) if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is not None:
            sessions = {pid: _starttime(pid) for pid in _descendants(self.proc.pid)}
            self._terminate(self.proc)
            self.proc = None
            # A connection a test left open keeps its session process after the listener
            # exits. Give closing connections a moment, then stop the rest by pid.
            alive = lambda: [p for p, st in sessions.items() if st is not None and _starttime(p) == st]  # noqa: E731
            try:
                wait_until(lambda: not alive(), timeout=2)
            except TimeoutError:
                pass
            self.leftover_sessions = alive()
            for pid in self.leftover_sessions:
                _kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not alive(), timeout=self.stop_timeout)
            except TimeoutError:
                for pid in alive():
                    _kill(pid, signal.SIGKILL)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from "state" on; comm may hold spaces


def _starttime(pid: int) -> int | None:
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    require_sshd()
    with Sshd() as server:
        yield server
    # Every runner a test opened must have closed its connection (stop() killed any left).
    assert server.leftover_sessions == [], f"ssh sessions left open: {server.leftover_sessions}"
