"""The generated sudoers file, checked by visudo and enforced by a real sudo.

The real-sudo tests install a generated file for the unprivileged ``nobody`` under
/etc/sudoers.d (so they need root, as on CI), point its systemctl at a recording
script, and run ``sudo -n`` as ``nobody``: exactly the whitelisted restarts run, as
root; everything else is refused and never reaches the script.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from selfheal.grants.sudoers import escape_arg, sudoers_text
from selfheal.whitelist import load_whitelist
from tests.conftest import require

SELFHEAL = Path(sys.executable).parent / "selfheal"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VISUDO = shutil.which("visudo", path=SBIN_PATH)
RUNUSER = shutil.which("runuser", path=SBIN_PATH)
SUDO = Path("/usr/bin/sudo")

BASE = """\
version: 1
metadata:
  reviewed_by: [alice]
  reviewed_at: 2026-11-25
groups:
  sre: [alice, bob]
entries:
"""


def entry(entry_id: str, unit: str, host: str, scope: str = "system", mode: str = "active") -> str:
    return f"""\
  - id: {entry_id}
    kind: systemd.restart
    mode: {mode}
    target: {{unit: "{unit}", host: "{host}", scope: {scope}}}
    blast_radius: instance
    approvers: {{groups: [sre]}}
    rate_limit: {{max_executions: 2, window: 1h}}
    cooldown: 10m
    match: ['alertname="Down"']
    verify: {{timeout: 1m}}
"""


# Deliberately not in id order: the output must be sorted by entry id. Shadow entries
# (decided, never executed) only read, which needs no sudo: they are named, never granted.
ENTRIES = [
    entry("restart-web-api", "web-api.service", "web-*"),
    entry("restart-db", "pg@15:main.service", "db-*"),
    entry("watch-web-cache", "web-cache.service", "web-*", mode="shadow"),
    entry("restart-web-user", "web-user.service", "web-*", scope="user"),
    entry("restart-getty", "getty@tty1.service", "web-*"),
    entry("watch-cache", "cache.service", "cache-*", mode="shadow"),
]


@pytest.fixture
def wl_path(tmp_path: Path) -> Path:
    path = tmp_path / "whitelist.yaml"
    path.write_text(BASE + "".join(ENTRIES))
    return path


@pytest.fixture
def loaded(wl_path: Path):
    return load_whitelist(wl_path)


def rules(text: str) -> list[str]:
    """The lines sudo acts on (everything but comments and blank lines)."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def visudo_check(text: str, directory: Path) -> subprocess.CompletedProcess:
    path = directory / f"sudoers-{secrets.token_hex(4)}"
    path.write_text(text)
    path.chmod(0o440)
    return subprocess.run([VISUDO, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


# --- what the text says ---------------------------------------------------------------

def test_web_host_gets_exactly_its_two_system_restarts(loaded):
    text = sudoers_text(loaded, host="web-1")
    assert rules(text) == [
        "Cmnd_Alias SELFHEAL_RESTART_GETTY = /usr/bin/systemctl --system --no-pager restart getty@tty1.service",
        "Cmnd_Alias SELFHEAL_RESTART_WEB_API = /usr/bin/systemctl --system --no-pager restart web-api.service",
        "Defaults:selfheal !requiretty",
        "selfheal ALL=(root) NOPASSWD: SELFHEAL_RESTART_GETTY, SELFHEAL_RESTART_WEB_API",
    ]
    # Each alias is traceable to its entry; the user-scope unit is only mentioned, not granted.
    assert "# entry restart-getty: restart getty@tty1.service on hosts web-*\nCmnd_Alias SELFHEAL_RESTART_GETTY" in text
    assert "# entry restart-web-api: restart web-api.service on hosts web-*\nCmnd_Alias SELFHEAL_RESTART_WEB_API" in text
    assert "#   restart-web-user: web-user.service" in text
    assert "without sudo" in text
    assert "pg@15" not in text


def test_shadow_entries_are_named_and_granted_nothing(loaded):
    text = sudoers_text(loaded, host="web-1")
    assert "web-cache.service" not in "\n".join(rules(text))
    assert ("# Shadow entries (decided, never executed): they only read their unit's state and journal,\n"
            "# which needs no sudo (see above), so nothing is granted for them:\n"
            "#   watch-web-cache: web-cache.service (system scope)\n") in text
    assert "Reads need no\n# sudo: systemctl show works over D-Bus; journalctl needs selfheal in group systemd-journal." in text
    assert "watch-cache" not in text  # cache-* only
    # A host where only shadow entries apply: a file that says so and grants nothing.
    only_shadow = sudoers_text(loaded, host="cache-1")
    assert rules(only_shadow) == []
    assert "#   watch-cache: cache.service (system scope)\n" in only_shadow
    assert only_shadow.endswith("# No active (non-shadow) system-scope systemd.restart entry applies to host cache-1: "
                                "this file grants nothing.\n")
    assert "Shadow entries" not in sudoers_text(loaded, host="db-1")


def test_header_names_whitelist_digest_host_and_install(loaded, wl_path):
    text = sudoers_text(loaded, host="web-1")
    assert text.startswith("# Generated by `selfheal whitelist sudoers`")
    assert f"# whitelist: {wl_path}\n" in text
    assert f"# sha256:    {loaded.sha256}\n" in text
    assert "# host:      web-1\n" in text
    assert "/etc/sudoers.d/selfheal with mode 0440" in text and "visudo -c -f FILE" in text


def test_db_host_gets_only_its_restart_with_the_colon_escaped(loaded):
    text = sudoers_text(loaded, host="db-1", user="worker", systemctl="/bin/systemctl")
    assert rules(text) == [
        r"Cmnd_Alias SELFHEAL_RESTART_DB = /bin/systemctl --system --no-pager restart pg@15\:main.service",
        "Defaults:worker !requiretty",
        "worker ALL=(root) NOPASSWD: SELFHEAL_RESTART_DB",
    ]


def test_a_host_no_entry_matches_gets_a_file_granting_nothing(loaded):
    text = sudoers_text(loaded, host="other")
    assert rules(text) == []
    assert "grants nothing" in text
    assert text.endswith("nothing.\n")


def test_a_host_with_only_user_scope_units_gets_nothing_but_their_mention(tmp_path):
    path = tmp_path / "wl.yaml"
    path.write_text(BASE + entry("restart-mine", "mine.service", "box", scope="user"))
    text = sudoers_text(load_whitelist(path), host="box")
    assert rules(text) == []
    assert "#   restart-mine: mine.service" in text and "grants nothing" in text


def test_no_wildcards_and_deterministic(loaded, wl_path, tmp_path):
    text = sudoers_text(loaded, host="web-1")
    assert text.endswith("\n") and not text.endswith("\n\n")
    for line in rules(text):
        assert not re.search(r"[*?\[\]]", line), line
        assert " ALL" not in line.replace("ALL=(root)", ""), line
    # Entries in another order give the same file (only the header's digest/path differ).
    other = tmp_path / "reversed.yaml"
    other.write_text(BASE + "".join(reversed(ENTRIES)))
    assert rules(sudoers_text(load_whitelist(other), host="web-1")) == rules(text)
    assert sudoers_text(loaded, host="web-1") == text


def test_alias_names_are_unique_even_when_ids_collide(tmp_path):
    path = tmp_path / "wl.yaml"
    path.write_text(BASE + entry("a-b", "one.service", "h") + entry("a.b", "two.service", "h")
                    + entry("a_b", "three.service", "h") + entry("a-b-2", "four.service", "h"))
    lines = rules(sudoers_text(load_whitelist(path), host="h"))
    names = [line.split()[1] for line in lines if line.startswith("Cmnd_Alias")]
    assert len(names) == 4 == len(set(names))
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names)
    assert lines[-1] == f"selfheal ALL=(root) NOPASSWD: {', '.join(names)}"


@pytest.mark.parametrize("kwargs", [
    {"host": "web-*"}, {"host": "web 1"}, {"host": ""}, {"host": "-web"}, {"host": "web,db"},
    {"host": "web-1\nALL ALL=(ALL) ALL"},
    {"host": "web-1", "user": "ALL"}, {"host": "web-1", "user": "SELFHEAL"}, {"host": "web-1", "user": "bad user"},
    {"host": "web-1", "user": "a,b"}, {"host": "web-1", "user": "%sudo"}, {"host": "web-1", "user": "x" * 33},
    {"host": "web-1", "user": ""},
    {"host": "web-1", "systemctl": "systemctl"}, {"host": "web-1", "systemctl": "/usr/bin/system ctl"},
    {"host": "web-1", "systemctl": "/usr/bin/../bin/sh"}, {"host": "web-1", "systemctl": "/usr/bin/*"},
    {"host": "web-1", "systemctl": "/usr/bin/systemctl,/bin/sh"}, {"host": "web-1", "systemctl": "/usr/bin/"},
    {"host": "web-1", "systemctl": "/bin/a:b"}, {"host": "web-1", "systemctl": "/bin/a\\b"},
])
def test_bad_host_user_or_systemctl_is_refused(loaded, kwargs):
    with pytest.raises(ValueError, match=r"host|user|systemctl"):
        sudoers_text(loaded, **kwargs)


@pytest.mark.parametrize("arg, spelled", [
    ("getty@tty1.service", "getty@tty1.service"),
    ("a:b.service", r"a\:b.service"),
    ("pg@15:main.service", r"pg@15\:main.service"),
    ("x,y=z", r"x\,y\=z"),
    ("back\\slash", "back\\\\\\\\slash"),  # sudo unescapes once, fnmatch once more
])
def test_arguments_are_escaped_for_sudoers(arg, spelled):
    assert escape_arg(arg) == spelled


@pytest.mark.parametrize("arg", ["a b.service", "a\tb", "web-*.service", "a?.service", "[ab].service", "", "a#b", "a!b"])
def test_arguments_sudo_cannot_match_exactly_are_refused(arg):
    with pytest.raises(ValueError, match="cannot be granted exactly"):
        escape_arg(arg)


def test_cli_prints_the_same_text_and_refuses_a_bad_host(wl_path, loaded):
    result = subprocess.run([str(SELFHEAL), "whitelist", "sudoers", str(wl_path), "--host", "web-1", "--user", "nobody"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == sudoers_text(loaded, host="web-1", user="nobody")
    bad = subprocess.run([str(SELFHEAL), "whitelist", "sudoers", str(wl_path), "--host", "web-*"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a host name" in bad.stderr and bad.stdout == ""


# --- visudo accepts every generated file ---------------------------------------------

def test_visudo_accepts_every_generated_file(loaded, tmp_path):
    require("sudo", None if VISUDO else "visudo not found (Debian package sudo)")
    collide = tmp_path / "collide.yaml"
    collide.write_text(BASE + entry("a-b", "a:b.service", "h") + entry("a.b", "b.service", "h"))
    demo = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "whitelist.yaml"
    texts = [sudoers_text(loaded, host=h) for h in ("web-1", "db-1", "other", "cache-1")]
    texts += [sudoers_text(loaded, host="db-7", user="nobody", systemctl="/usr/local/bin/sys_ctl+x.1"),
              sudoers_text(load_whitelist(collide), host="h"), sudoers_text(load_whitelist(demo), host="localhost")]
    for text in texts:
        result = visudo_check(text, tmp_path)
        assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{text}"
        assert "parsed OK" in result.stdout


# --- a real sudo enforces it ------------------------------------------------------------

RECORDER = """\
#!/bin/sh
# Records who ran it and its exact argv, one bracketed argument each.
{ printf '%s' "$(id -u)"; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >> "$(dirname "$0")/log"
"""


def _sudo_problem() -> str | None:
    if not SUDO.exists() or not VISUDO:
        return "sudo or visudo not found (Debian package sudo)"
    if not RUNUSER:
        return "runuser not found (util-linux)"
    if os.geteuid() != 0:
        return "installing a file in /etc/sudoers.d needs root"
    if not SUDO.stat().st_mode & stat.S_ISUID:
        return "/usr/bin/sudo is not setuid"
    if not Path("/etc/sudoers.d").is_dir():
        return "/etc/sudoers.d does not exist"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "no user nobody"
    return None


class RealSudo:
    def __init__(self, directory: Path):
        self.dir = directory
        self.script = directory / "systemctl"
        self.log = directory / "log"
        self.installed: list[Path] = []

    def install(self, text: str) -> Path:
        check = visudo_check(text, self.dir)
        assert check.returncode == 0, check.stdout + check.stderr
        final = Path("/etc/sudoers.d") / f"selfheal-test-{secrets.token_hex(6)}"
        staging = final.with_name(f".{final.name}.tmp")  # sudo ignores names with a '.'
        self.installed += [final, staging]
        staging.write_text(text)
        os.chown(staging, 0, 0)
        staging.chmod(0o440)
        staging.rename(final)
        whole = subprocess.run([VISUDO, "-c"], capture_output=True, text=True, timeout=30)
        if whole.returncode != 0:
            final.unlink()
            pytest.fail(f"the installed file breaks this machine's sudoers: {whole.stdout}{whole.stderr}")
        return final

    def sudo(self, *argv: str, sudo_opts: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run([RUNUSER, "-u", "nobody", "--", str(SUDO), "-n", *sudo_opts, *argv],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    def logged(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def real_sudo():
    require("sudo", _sudo_problem())
    directory = Path(tempfile.mkdtemp(prefix="selfheal-sudo-", dir="/tmp"))
    harness = RealSudo(directory)
    try:
        directory.chmod(0o755)  # root-owned, only root may write; nobody may traverse it
        harness.script.write_text(RECORDER)
        harness.script.chmod(0o755)
        ran = subprocess.run([str(harness.script), "probe"], capture_output=True, timeout=10)
        require("sudo", None if ran.returncode == 0 else f"cannot execute scripts in /tmp: {ran.stderr!r}")
        harness.log.unlink()
        yield harness
    finally:
        for path in harness.installed:
            path.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
    assert not any(p.exists() for p in harness.installed)


def assert_refused(harness: RealSudo, *argv: str, sudo_opts: tuple[str, ...] = ()) -> None:
    before = harness.logged()
    result = harness.sudo(*argv, sudo_opts=sudo_opts)
    assert result.returncode != 0, f"sudo allowed {argv}: {result.stdout}"
    assert "a password is required" in result.stderr or "not allowed" in result.stderr, result.stderr
    assert harness.logged() == before, f"{argv} reached the script"


def test_real_sudo_allows_exactly_the_whitelisted_restarts(real_sudo, wl_path):
    script = str(real_sudo.script)
    cli = subprocess.run([str(SELFHEAL), "whitelist", "sudoers", str(wl_path), "--host", "web-1",
                          "--user", "nobody", "--systemctl", script], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert len([line for line in rules(cli.stdout) if line.startswith("Cmnd_Alias")]) == 2
    real_sudo.install(cli.stdout)

    for unit in ("web-api.service", "getty@tty1.service"):
        ok = real_sudo.sudo(script, "--system", "--no-pager", "restart", unit)
        assert ok.returncode == 0, ok.stderr
    assert real_sudo.logged() == [
        "0 [--system] [--no-pager] [restart] [web-api.service]",
        "0 [--system] [--no-pager] [restart] [getty@tty1.service]",
    ]

    unit = "web-api.service"
    for argv in [
        (script, "--system", "--no-pager", "stop", unit),
        (script, "--system", "--no-pager", "start", unit),
        (script, "--system", "--no-pager", "restart", "other.service"),
        (script, "--system", "--no-pager", "restart", "pg@15:main.service"),  # db-* only
        (script, "--system", "--no-pager", "restart", "web-user.service"),  # user scope: no sudo
        (script, "--system", "--no-pager", "restart", "web-cache.service"),  # shadow: never executed
        (script, "--system", "--no-pager", "show", "web-cache.service"),  # its reads need no sudo
        (script, "--system", "--no-pager", "restart", unit, "--now"),
        (script, "--system", "--no-pager", "restart", unit, "other.service"),
        (script, "--system", "--no-pager", "restart", f"{unit} other.service"),
        (script, "--user", "--no-pager", "restart", unit),
        (script, "--system", "restart", unit),
        (script, "--system", "--no-pager", "daemon-reload"),
        (script, "--system", "--no-pager", "edit", unit),
        (script,),
        ("/usr/bin/id",),
        ("/bin/true",),
        ("/bin/sh", "-c", f"{script} --system --no-pager restart {unit}"),
    ]:
        assert_refused(real_sudo, *argv)
    # The allowed command, but as another user than root.
    assert_refused(real_sudo, script, "--system", "--no-pager", "restart", unit, sudo_opts=("-u", "daemon"))
    assert len(real_sudo.logged()) == 2


def test_real_sudo_matches_an_escaped_unit_name_exactly(real_sudo, loaded):
    script = str(real_sudo.script)
    real_sudo.install(sudoers_text(loaded, host="db-1", user="nobody", systemctl=script))
    ok = real_sudo.sudo(script, "--system", "--no-pager", "restart", "pg@15:main.service")
    assert ok.returncode == 0, ok.stderr
    assert real_sudo.logged() == ["0 [--system] [--no-pager] [restart] [pg@15:main.service]"]
    for unit in (r"pg@15\:main.service", "pg@15", "pg@15:main", "web-api.service"):
        assert_refused(real_sudo, script, "--system", "--no-pager", "restart", unit)


def test_real_sudo_with_a_file_granting_nothing_refuses_everything(real_sudo, loaded):
    script = str(real_sudo.script)
    real_sudo.install(sudoers_text(loaded, host="other", user="nobody", systemctl=script))
    for unit in ("web-api.service", "pg@15:main.service"):
        assert_refused(real_sudo, script, "--system", "--no-pager", "restart", unit)
    assert real_sudo.logged() == []


def test_real_sudo_grants_a_host_with_only_a_shadow_entry_nothing(real_sudo, loaded):
    script = str(real_sudo.script)
    real_sudo.install(sudoers_text(loaded, host="cache-1", user="nobody", systemctl=script))
    for verb in ("restart", "show", "stop"):
        assert_refused(real_sudo, script, "--system", "--no-pager", verb, "cache.service")
    assert real_sudo.logged() == []
