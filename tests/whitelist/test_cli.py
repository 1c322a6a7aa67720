import subprocess
import sys
from pathlib import Path

from tests.whitelist.conftest import DEMO, SYSTEMD_ENTRY, whitelist_text

SELFHEAL = [sys.executable, "-m", "selfheal.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SELFHEAL, *args], capture_output=True, text=True, timeout=60)


def test_check_prints_a_table_of_entries_for_a_valid_file():
    result = run("whitelist", "check", str(DEMO))
    assert result.returncode == 0, result.stderr
    for entry_id, needs in [
        ("restart-demo-api", "runs automatically"),
        ("rollback-checkout", "1 approver"),
        ("rollback-payments-webhook", "2 distinct approver(s)"),
    ]:
        row = next(line for line in result.stdout.splitlines() if entry_id in line)
        assert needs in row


def test_check_lists_each_problem_as_path_line_field_message(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(whitelist_text(SYSTEMD_ENTRY, SYSTEMD_ENTRY.replace("blast_radius: instance", "blast_radius: galaxy")))
    result = run("whitelist", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:17: entries[1].id: duplicate id 'restart-api'" in result.stderr
    assert f"{bad}:20: entries[1].blast_radius: blast radius 'galaxy' has no tier" in result.stderr
    assert result.stdout == ""


def test_explain_says_what_who_and_within_which_bounds():
    result = run("whitelist", "explain", str(DEMO), "scale-queue-workers")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Auto Scaling group demo-queue-workers" in text
    assert "between 2 and 8, changing by at most 2 per action" in text
    assert "2 distinct approver(s) among alice, bob, carol" in text
    assert "at most 4 execution(s) per 1d; cooldown 15m" in text


def test_explain_unknown_entry_fails_and_lists_the_entries():
    result = run("whitelist", "explain", str(DEMO), "nope")
    assert result.returncode == 1
    assert "restart-demo-api" in result.stderr
