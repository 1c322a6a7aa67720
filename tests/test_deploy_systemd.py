"""deploy/systemd: the units as systemd itself reads them (``systemd-analyze verify`` and
``security --offline``), secrets only through LoadCredential=, and commands that exist."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/selfheal/venv/bin/selfheal"
SELFHEAL = Path(sys.executable).with_name("selfheal")
# Exposure as `systemd-analyze security` scores it (0 safest, 10 unsafe). The local-sudo
# drop-in gives back what setuid needs, so it scores worse, and is still "OK" (< 3).
EXPOSURE = {"selfheal-worker.service": 2.0, "selfheal-ingress.service": 2.0, "selfheal-worker.service+local-sudo": 3.0}
SECRET_WORDS = re.compile(r"TOKEN|SECRET|API_KEY|PASSWORD|PRIVATE")


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    require("systemd-analyze", None if found else "not installed (Debian package systemd)")
    return found


def _install(tmp: Path, with_sudo: bool) -> Path:
    """The units as an admin would install them, with ExecStart pointing at this checkout's
    selfheal (verify checks that the program exists and is executable)."""
    for unit in ("selfheal-worker.service", "selfheal-ingress.service"):
        text = (UNITS / unit).read_text()
        assert INSTALLED in text
        (tmp / unit).write_text(text.replace(INSTALLED, str(SELFHEAL)))
    if with_sudo:
        (tmp / "selfheal-worker.service.d").mkdir()
        shutil.copy(UNITS / "selfheal-worker.service.d" / "local-sudo.conf", tmp / "selfheal-worker.service.d")
    return tmp


def _run(analyze: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    # The trailing colon keeps systemd's own unit directories (targets the units refer to).
    return subprocess.run([analyze, *args], env={"SYSTEMD_UNIT_PATH": f"{tmp}:", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit,with_sudo", [("selfheal-worker.service", False), ("selfheal-ingress.service", False),
                                            ("selfheal-worker.service", True)])
def test_units_verify_cleanly_and_score_as_hardened(unit, with_sudo, tmp_path):
    analyze = _analyze()
    assert SELFHEAL.exists(), SELFHEAL
    tmp = _install(tmp_path, with_sudo)
    verified = _run(analyze, tmp, "verify", unit)
    # systemd-analyze exits 0 on unknown keys and bad values, and only says so: any output fails.
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stdout + verified.stderr
    security = _run(analyze, tmp, "security", "--offline=true", "--no-pager", unit)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))
    assert score <= EXPOSURE[unit + ("+local-sudo" if with_sudo else "")], security.stdout[-2000:]


def test_a_typo_in_a_unit_is_caught(tmp_path):
    analyze = _analyze()
    tmp = _install(tmp_path, True)
    conf = tmp / "selfheal-worker.service.d" / "local-sudo.conf"
    conf.write_text(conf.read_text() + "ProtectSytem=strict\n")
    verified = _run(analyze, tmp, "verify", "selfheal-worker.service")
    assert "Unknown key 'ProtectSytem'" in verified.stderr


def _service(path: Path) -> list[tuple[str, str]]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    items = []
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            items.append((key, value))
    return items


@pytest.mark.parametrize("unit", ["selfheal-worker.service", "selfheal-ingress.service"])
def test_secrets_only_through_credentials(unit):
    items = _service(UNITS / unit)
    credentials = {value.split(":", 1)[0] for key, value in items if key == "LoadCredential"}
    environment = [value for key, value in items if key == "Environment"]
    used = set()
    for assignment in environment:
        name, _, value = assignment.partition("=")
        if SECRET_WORDS.search(name) or name.endswith("_KEY_PATH"):
            # A secret setting names a file in the credentials directory, never the secret itself.
            assert name.endswith(("_FILE", "_PATH", "ATTESTATION_KEY")) and value.startswith("%d/"), assignment
        if value.startswith("%d/"):
            used.add(value.removeprefix("%d/"))
    if unit == "selfheal-worker.service":  # runners.yaml names it by its absolute path (no %d there)
        used.add("ssh-key")
        assert "/run/credentials/selfheal-worker.service/ssh-key" in (UNITS / unit).read_text()
    assert used == credentials, f"credentials loaded but unused, or used but not loaded: {used ^ credentials}"
    assert not any(key == "Environment" and SECRET_WORDS.search(v.partition("=")[2]) for key, v in items)
    assert ("EnvironmentFile", "/etc/selfheal/" + unit.split("-")[1].split(".")[0] + ".env") in items


@pytest.mark.parametrize("unit", ["selfheal-worker.service", "selfheal-ingress.service"])
def test_the_commands_the_units_run_exist(unit):
    [exec_start] = [v for k, v in _service(UNITS / unit) if k == "ExecStart"]
    argv = exec_start.split()
    assert argv[0] == INSTALLED
    result = subprocess.run([str(SELFHEAL), *argv[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in (a for a in argv[1:] if a.startswith("--")):
        assert flag in result.stdout, f"{flag} is not an option of `selfheal {argv[1]}`"
