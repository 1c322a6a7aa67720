"""Test harness: a real ``systemd --user`` manager plus ``systemd-journald``.

Runs both daemons as root inside a private mount + cgroup namespace so tests
can start/restart real units and read their journal, without touching the
host's systemd state.  Needs root, ``unshare``, ``nsenter``, ``mount``,
``systemctl``, ``journalctl``, ``/lib/systemd/systemd`` and
``/lib/systemd/systemd-journald``.

Usage (from a test module in tests/support use ``from .systemd_user import ...``;
elsewhere import it however tests/ is importable, e.g. ``tests.support.systemd_user``)::

    def test_something():
        require_systemd_user()            # skip (or fail when CI=true)
        with SystemdUser() as sd:
            sd.install_unit("demo.service", SystemdUser.simple_service(
                "echo started; while true; do echo tick; sleep 1; done"))
            sd.systemctl("restart", "demo.service")
            sd.show("demo.service", "InvocationID", "NRestarts")
            entries = sd.journal_entries("demo.service")   # list[dict]
            runner_prefix = sd.command_prefix            # for injected runners

    # or the pytest fixture ``systemd_user`` (import it into the test module /
    # conftest): ``def test_x(systemd_user): ...``

API
---
``require_systemd_user() -> None``
    Skip the calling test if prerequisites are missing; raise
    ``SystemdUserUnavailable`` instead when ``CI=true``.
``SystemdUser(start_timeout=10.0, stop_timeout=10.0)``
    Context manager (``start()``/``stop()`` also public, ``stop()`` is
    idempotent).  Attributes after start: ``launcher_pid``, ``journald_pid``,
    ``manager_pid``, ``pids``, ``runtime_dir`` (XDG_RUNTIME_DIR), ``config_dir``
    (XDG_CONFIG_HOME), ``unit_dir`` (``$XDG_CONFIG_HOME/systemd/user``),
    ``journal_dir`` (journal files, host-visible), ``env``,
    ``command_prefix``, ``ns_command_prefix``, ``start_seconds``,
    ``stop_seconds``.
``command_prefix -> list[str]``
    ``["env", "-u", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR=...", ...]``.
    ``prefix + ["systemctl", "--user", ...]`` works from any normal subprocess:
    systemctl talks to the manager over ``$XDG_RUNTIME_DIR/systemd/private``,
    which is an ordinary host path, so NO namespace entry is needed.
    (Only ``systemctl --user is-system-running`` differs: outside the namespace
    it prints "offline", because /run/systemd/system does not exist there.)
``ns_command_prefix -> list[str]``
    ``["nsenter", "-t", manager_pid, "-m", "-C", "--", "env", ...]``.  Needed
    for a *plain* ``journalctl`` (it reads /var/log/journal, which is only
    bind-mounted to ``journal_dir`` inside the namespace) and for
    ``journalctl --sync`` (it talks to journald's socket under the
    namespace-private /run/systemd).  Without nsenter use
    ``journalctl -D <journal_dir>``.
``run(argv, ns=False, check=True, timeout=30) -> CompletedProcess``
``systemctl(*args, **kw)``  -> runs ``systemctl --user *args`` (no nsenter)
``journalctl(*args, ns=False, **kw)`` -> ``journalctl -D journal_dir *args``
    (or plain ``journalctl *args`` inside the namespace with ``ns=True``)
``show(unit, *props) -> dict[str, str]``
``install_unit(name, text, start=True) -> Path``  write, daemon-reload, start
``journal_entries(unit=None, grep=None) -> list[dict]``  (``-o json``)
``wait_until(predicate, timeout=10.0, interval=0.05)``
``SystemdUser.simple_service(shell_script, **service_options) -> str``

Journal fields
--------------
The manager is started inside ``/user.slice/user-0.slice/user@0.service``
(namespace-relative cgroup), exactly like a real PAM-started user manager, so
journald tags unit stdout with ``_SYSTEMD_USER_UNIT=<unit>``,
``_SYSTEMD_UNIT=user@0.service``, ``_SYSTEMD_USER_SLICE=app.slice``,
``_SYSTEMD_OWNER_UID=0``, ``_TRANSPORT=stdout`` (no ``_SYSTEMD_INVOCATION_ID``:
systemd 252 user managers set no invocation-id cgroup xattr).  The manager
(started with ``--log-target=journal``) logs its job messages ("Started ...",
"Stopping ...") with ``USER_UNIT=<unit>``, ``USER_INVOCATION_ID``,
``JOB_TYPE``, ``JOB_RESULT``, ``MESSAGE_ID``.

Select a unit with ``journalctl --user-unit X`` (matches both kinds) or the
match ``_SYSTEMD_USER_UNIT=X``.  ``journalctl -u X`` returns NOTHING (it matches
system-unit fields) and so does ``journalctl --user [...]``: everything runs
as uid 0, journald stores uid-0 entries in ``system.journal`` and ``--user``
only opens ``user-<uid>.journal`` files.

Isolation / pitfalls handled here
---------------------------------
* cgroups: a user manager that finds itself in a root cgroup migrates EVERY
  process of that cgroup (host-wide!) into ``init.scope``.  The launcher
  therefore first moves itself into a fresh child cgroup (name=systemd and/or
  cgroup2 hierarchies only), then ``unshare --cgroup`` and mounts a private
  /sys/fs/cgroup that shows only those hierarchies, so resource controllers
  (memory, cpu, pids, ...) are never touched.  Only the hybrid layout
  (v1 name=systemd + cgroup2 at /sys/fs/cgroup/unified) has been exercised;
  the pure-v2 and pure-v1 branches are written but untested.
* journald would otherwise create /run/log/journal on the host; here it gets a
  drop-in (``Storage=persistent``, no kmsg, no rate limit) and writes to
  /var/log/journal, which is a bind mount of ``journal_dir``'s parent.
* ``DefaultTimeoutStopSec=5s`` (``$XDG_CONFIG_HOME/systemd/user.conf``) keeps
  shutdown quick if a unit ignores SIGTERM.
* If the test process dies, the launcher sees EOF on its stdin and tears the
  daemons down itself.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from tests.support.waiting import wait_until

SYSTEMD = "/lib/systemd/systemd"
JOURNALD = "/lib/systemd/systemd-journald"
_TOOLS = ("unshare", "nsenter", "mount", "systemctl", "journalctl", "sh", "env")
CGROUP_PREFIX = "selfheal-sdu-"


class SystemdUserUnavailable(RuntimeError):
    """Prerequisites for the real systemd --user harness are missing."""


class SystemdUserError(RuntimeError):
    """The harness failed to start or a command against it failed."""


# --------------------------------------------------------------------------
# prerequisites
# --------------------------------------------------------------------------


def _cgroup_mounts() -> dict[str, str]:
    """Return {"systemd": mountpoint, "unified": mountpoint} found in mountinfo.

    "systemd" is the cgroup-v1 ``name=systemd`` hierarchy, "unified" a cgroup2
    mount (either the hybrid /sys/fs/cgroup/unified or a pure-v2
    /sys/fs/cgroup).
    """
    found: dict[str, str] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mountpoint, fstype, superopts = fields[4], rfields[0], rfields[2]
        if fstype == "cgroup" and "name=systemd" in superopts.split(","):
            found.setdefault("systemd", mountpoint)
        elif fstype == "cgroup2":
            found.setdefault("unified", mountpoint)
    return found


def _missing_requirements() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root")
    for tool in _TOOLS:
        if shutil.which(tool) is None:
            problems.append(f"{tool!r} not found on PATH")
    for binary in (SYSTEMD, JOURNALD):
        if not os.access(binary, os.X_OK):
            problems.append(f"{binary} missing")
    if not _cgroup_mounts():
        problems.append("no name=systemd or cgroup2 hierarchy mounted")
    return problems


def require_systemd_user() -> None:
    """Skip the current test if the harness can't run here.

    With ``CI=true`` in the environment a missing prerequisite is an error
    (``SystemdUserUnavailable``) instead of a skip.
    """
    problems = _missing_requirements()
    if not problems:
        return
    reason = "real systemd --user harness unavailable: " + "; ".join(problems)
    if os.environ.get("CI", "").strip().lower() == "true":
        raise SystemdUserUnavailable(reason)
    pytest.skip(reason)


# --------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, starttime) of pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def _alive(pid: int, starttime: int | None) -> bool:
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[1] == starttime


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _poll(predicate: Callable[[], bool], timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------
# launcher scripts (sh).  $1.. are positional args, nothing leaks into the
# environment of systemd --user or its units.
# --------------------------------------------------------------------------

# stage 1 (host namespaces): move into the private cgroups, then become the
# namespace launcher.  args: stage2-path  cgroup.procs-files...
_STAGE1 = r"""
set -eu
stage2=$1; shift
for procs in "$@"; do echo $$ > "$procs"; done
exec unshare --mount --cgroup --propagation private sh "$stage2"
"""

# stage 2 (inside the new mount+cgroup namespace; same pid as stage 1).
# Parameters are substituted by Python (all paths are mkdtemp paths).
_STAGE2 = r"""
set -eu
TMP=@TMP@
UID_=@UID@
say() { echo "$@"; }

# --- /run/systemd: private tmpfs (manager + journald runtime state)
mount -t tmpfs -o mode=0755 selfheal-sdu-run /run/systemd
mkdir -p /run/systemd/system /run/systemd/journal /run/systemd/journald.conf.d
cat > /run/systemd/journald.conf.d/50-selfheal-harness.conf <<'EOF'
[Journal]
Storage=persistent
ReadKMsg=no
RateLimitIntervalSec=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
EOF
# pretend the runtime journal was already flushed, so journald opens
# /var/log/journal right away and never creates /run/log on the host.
: > /run/systemd/journal/flushed
mount --bind "$TMP/log" /var/log

# --- private cgroupfs view: only name=systemd / cgroup2, rooted at our cgroup
mount -t tmpfs -o mode=0755 selfheal-sdu-cgroup /sys/fs/cgroup
CGDIRS=""
case "@CGMODE@" in
  unified)
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    CGDIRS=/sys/fs/cgroup ;;
  *)
    mkdir /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
    CGDIRS=/sys/fs/cgroup/systemd
    if [ "@CGMODE@" = hybrid ]; then
      mkdir /sys/fs/cgroup/unified
      mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
      CGDIRS="$CGDIRS /sys/fs/cgroup/unified"
    fi ;;
esac
# safety: systemd must not be able to see any resource-controller hierarchy
for c in memory cpu pids cpuacct blkio devices freezer cpuset; do
  [ ! -e "/sys/fs/cgroup/$c" ] || { echo "cgroup isolation failed" >&2; exit 1; }
done

# --- journald
"@JOURNALD@" </dev/null >"$TMP/journald.log" 2>&1 &
JOURNALD=$!
say "journald $JOURNALD"
i=0
while [ ! -S /run/systemd/journal/stdout ] || [ ! -S /run/systemd/journal/socket ]; do
  i=$((i + 1)); [ $i -le 1000 ] || { echo "journald socket timeout" >&2; exit 1; }
  sleep 0.01
done

# --- user manager, placed like a PAM-started one: user@UID.service
USERCG="user.slice/user-$UID_.slice/user@$UID_.service"
PROCS=""
for d in $CGDIRS; do
  mkdir -p "$d/$USERCG"
  PROCS="$PROCS $d/$USERCG/cgroup.procs"
done
sh -c 'for p in "$@"; do echo $$ > "$p"; done; exec "@SYSTEMD@" --user --log-target=journal' \
  selfheal-sdu-manager $PROCS </dev/null >"$TMP/manager.log" 2>&1 &
MANAGER=$!
say "manager $MANAGER"

# --- wait for the harness to close our stdin (stop() or test process death)
read -r _ignored || true
kill -TERM "$MANAGER" 2>/dev/null || true
wait "$MANAGER" 2>/dev/null || true
kill -TERM "$JOURNALD" 2>/dev/null || true
wait || true
"""

_USER_CONF = """\
[Manager]
DefaultTimeoutStopSec=5s
DefaultTimeoutStartSec=20s
"""


class SystemdUser:
    """A real ``systemd --user`` + journald in a private namespace (see module doc)."""

    def __init__(self, start_timeout: float = 10.0, stop_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.tmpdir: Path | None = None
        self.launcher: subprocess.Popen[bytes] | None = None
        self.launcher_pid: int | None = None
        self.journald_pid: int | None = None
        self.manager_pid: int | None = None
        self._starttimes: dict[int, int | None] = {}
        self.host_cgroups: list[Path] = []
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.leaked_pids: list[int] = []

    # ----------------------------------------------------------- properties
    @property
    def runtime_dir(self) -> Path:
        return self._tmp / "runtime"

    @property
    def config_dir(self) -> Path:
        return self._tmp / "config"

    @property
    def unit_dir(self) -> Path:
        return self.config_dir / "systemd" / "user"

    @property
    def journal_dir(self) -> Path:
        """Directory containing ``<machine-id>/system.journal`` (host path)."""
        return self._tmp / "log" / "journal"

    @property
    def pids(self) -> list[int]:
        """Pids started directly by the harness (launcher, journald, manager)."""
        return [p for p in (self.launcher_pid, self.journald_pid, self.manager_pid) if p]

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a client needs for ``systemctl --user``."""
        t = self._tmp
        return {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_CONFIG_HOME": str(self.config_dir),
            "XDG_DATA_HOME": str(t / "home" / ".local" / "share"),
            "XDG_STATE_HOME": str(t / "home" / ".local" / "state"),
            "XDG_CACHE_HOME": str(t / "home" / ".cache"),
            "HOME": str(t / "home"),
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }

    @property
    def command_prefix(self) -> list[str]:
        """Prefix for running systemctl/journalctl against this manager, host ns."""
        return ["env", "-u", "DBUS_SESSION_BUS_ADDRESS"] + [
            f"{k}={v}" for k, v in self.env.items()
        ]

    @property
    def ns_command_prefix(self) -> list[str]:
        """Like command_prefix, but entering the harness mount+cgroup namespace."""
        if not self.manager_pid:
            raise SystemdUserError("not started")
        return ["nsenter", "-t", str(self.manager_pid), "-m", "-C", "--"] + self.command_prefix

    @property
    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise SystemdUserError("not started")
        return self.tmpdir

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SystemdUser":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "SystemdUser":
        if self.launcher is not None:
            raise SystemdUserError("already started")
        problems = _missing_requirements()
        if problems:
            raise SystemdUserUnavailable("; ".join(problems))
        t0 = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="selfheal-sdu-"))
        try:
            self._prepare_dirs()
            self._create_host_cgroups()
            self._spawn()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _prepare_dirs(self) -> None:
        t = self._tmp
        self.runtime_dir.mkdir(mode=0o700)
        os.chmod(self.runtime_dir, 0o700)
        self.unit_dir.mkdir(parents=True)
        (self.config_dir / "systemd" / "user.conf").write_text(_USER_CONF)
        for d in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            Path(self.env[d]).mkdir(parents=True, exist_ok=True)
        (t / "log" / "journal").mkdir(parents=True)

    def _create_host_cgroups(self) -> None:
        mounts = _cgroup_mounts()
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if ctrls == "name=systemd":
                own["systemd"] = path
            elif ctrls == "":
                own["unified"] = path
        name = CGROUP_PREFIX + uuid.uuid4().hex[:12]
        if "systemd" in mounts:
            self._cgmode = "hybrid" if "unified" in mounts else "legacy"
        else:
            self._cgmode = "unified"
        for key in ("systemd", "unified"):
            if key in mounts and key in own:
                d = Path(mounts[key] + own[key].rstrip("/")) / name
                d.mkdir()
                self.host_cgroups.append(d)

    def _spawn(self) -> None:
        t = self._tmp
        stage1 = t / "stage1.sh"
        stage2 = t / "stage2.sh"
        stage1.write_text(_STAGE1)
        stage2.write_text(
            _STAGE2.replace("@TMP@", str(t))
            .replace("@UID@", str(os.geteuid()))
            .replace("@CGMODE@", self._cgmode)
            .replace("@JOURNALD@", JOURNALD)
            .replace("@SYSTEMD@", SYSTEMD)
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            **self.env,
        }
        with open(t / "launcher.log", "w") as errlog:
            self.launcher = subprocess.Popen(
                ["sh", str(stage1), str(stage2)]
                + [str(d / "cgroup.procs") for d in self.host_cgroups],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
                env=env,
                start_new_session=True,
            )
        self.launcher_pid = self.launcher.pid
        self._remember(self.launcher_pid)

    def _remember(self, pid: int) -> None:
        st = _proc_stat(pid)
        self._starttimes[pid] = st[1] if st else None

    def _wait_ready(self) -> None:
        assert self.launcher is not None and self.launcher.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        # the launcher prints "journald <pid>" and "manager <pid>"
        fd, buf = self.launcher.stdout.fileno(), b""
        while buf.count(b"\n") < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemdUserError("timeout waiting for launcher:\n" + self.logs())
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:  # EOF: the launcher died
                    raise SystemdUserError("launcher exited early:\n" + self.logs())
                buf += chunk
        for line in buf.decode().splitlines()[:2]:
            kind, pid = line.split()
            setattr(self, f"{kind}_pid", int(pid))
            self._remember(int(pid))
        private = self.runtime_dir / "systemd" / "private"

        def ready() -> bool:
            if self.launcher.poll() is not None or not _alive(self.manager_pid, None):
                raise SystemdUserError("systemd --user exited during startup:\n" + self.logs())
            return private.is_socket()

        if not _poll(ready, max(0.0, deadline - time.monotonic()), 0.02):
            raise SystemdUserError(f"timeout waiting for {private}:\n" + self.logs())

    def logs(self) -> str:
        out = []
        for name in ("launcher.log", "journald.log", "manager.log"):
            p = self._tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text(errors='replace')}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop everything started (by pid), sweep the cgroups, remove temp dirs.

        Order: manager (SIGTERM makes it stop all units, then exit), journald,
        launcher.  If the manager does not exit within ``stop_timeout``, its
        unit processes are SIGKILLed first (so the still-living manager reaps
        them instead of orphaning them to pid 1), then the manager itself.
        """
        if self.tmpdir is None:
            return
        t0 = time.monotonic()
        try:
            self._stop_processes()
        finally:
            try:
                self.leaked_pids = self._kill_cgroup_members(exclude=set())
                self._remove_cgroups()
            finally:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None
                self.stop_seconds = time.monotonic() - t0

    def _stop_processes(self) -> None:
        try:
            if self.manager_pid and not self._terminate(self.manager_pid, kill=False):
                self._kill_cgroup_members(exclude=set(self.pids))
                self._terminate(self.manager_pid)
            if self.journald_pid:
                self._terminate(self.journald_pid)
        finally:
            if self.launcher is not None:
                try:
                    if self.launcher.stdin:
                        self.launcher.stdin.close()
                except OSError:
                    pass
                try:
                    self.launcher.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.launcher.kill()
                    self.launcher.wait(self.stop_timeout)
                if self.launcher.stdout:
                    self.launcher.stdout.close()

    def _terminate(self, pid: int, kill: bool = True) -> bool:
        """SIGTERM pid, wait; SIGKILL on timeout if ``kill``.  True once it is gone."""
        start = self._starttimes.get(pid)

        def gone() -> bool:
            return not _alive(pid, start)

        if gone():
            return True
        _signal(pid, signal.SIGTERM)
        if _poll(gone, self.stop_timeout, 0.01) or not kill:
            return gone()
        _signal(pid, signal.SIGKILL)
        return _poll(gone, self.stop_timeout, 0.01)

    def _cgroup_members(self) -> list[int]:
        found = []
        for root in self.host_cgroups:
            # os.walk ignores dirs that vanish while we walk (systemd rmdirs them)
            for dirpath, _, _ in os.walk(root):
                try:
                    found += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
                except OSError:
                    pass
        return sorted(set(found))

    def _kill_cgroup_members(self, exclude: set[int]) -> list[int]:
        """SIGKILL every process in our cgroup subtree except ``exclude``."""
        victims = [p for p in self._cgroup_members() if p not in exclude]
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        if victims:
            _poll(
                lambda: not [p for p in self._cgroup_members() if p not in exclude],
                self.stop_timeout,
                0.01,
            )
        return victims

    def _remove_cgroups(self) -> None:
        for root in self.host_cgroups:
            for dirpath, _, _ in os.walk(root, topdown=False):  # children first
                d = Path(dirpath)
                for _ in range(50):  # rmdir can race with the last exit
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)
        self.host_cgroups = [r for r in self.host_cgroups if r.exists()]

    # ---------------------------------------------------------------- commands
    def run(
        self,
        argv: Sequence[str],
        *,
        ns: bool = False,
        check: bool = True,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        prefix = self.ns_command_prefix if ns else self.command_prefix
        proc = subprocess.run(
            prefix + list(argv), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise SystemdUserError(
                f"{list(argv)} -> rc={proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def systemctl(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--user", "--no-pager", *args], **kw)

    def journalctl(self, *args: str, ns: bool = False, **kw) -> subprocess.CompletedProcess[str]:
        base = ["journalctl", "--no-pager"]
        if not ns:
            base += ["-D", str(self.journal_dir)]
        return self.run(base + list(args), ns=ns, **kw)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        argv = ["show", unit]
        if props:
            argv += ["-p", ",".join(props)]
        out = self.systemctl(*argv).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def install_unit(self, name: str, text: str, *, start: bool = True) -> Path:
        path = self.unit_dir / name
        path.write_text(text)
        self.systemctl("daemon-reload")
        if start:
            self.systemctl("start", name)
        return path

    def journal_entries(self, unit: str | None = None, grep: str | None = None) -> list[dict]:
        args = ["-o", "json"]
        if unit:
            args += ["--user-unit", unit]
        if grep:
            args += ["--grep", grep]
        proc = self.journalctl(*args, check=False)
        # rc=1 with no output means "no entries" for --grep
        if proc.returncode not in (0, 1):
            raise SystemdUserError(f"journalctl failed: {proc.stderr}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    wait_until = staticmethod(wait_until)

    @staticmethod
    def simple_service(shell_script: str, **service_options: str) -> str:
        """Unit text for a ``Type=simple`` service running ``/bin/sh -c SCRIPT``."""
        if "'" in shell_script:
            raise ValueError("shell_script must not contain single quotes")
        extra = "".join(f"{k}={v}\n" for k, v in service_options.items())
        return (
            "[Unit]\nDescription=selfheal test unit\n\n"
            "[Service]\nType=simple\n"
            f"ExecStart=/bin/sh -c '{shell_script}'\n{extra}"
        )


@pytest.fixture
def systemd_user() -> Iterator[SystemdUser]:
    """pytest fixture: a started SystemdUser, stopped after the test."""
    require_systemd_user()
    with SystemdUser() as sd:
        yield sd
