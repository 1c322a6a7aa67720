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
    assert result.returncode == 2  # the input is wrong
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
    assert result.returncode == 2
    assert "restart-demo-api" in result.stderr


def test_check_and_explain_show_every_field_that_changes_authority(tmp_path: Path):
    """A reviewer sees who must agree and how (channels, confirmation, fast approvals), what
    may run alone and when that stops, the drills, and that a shadow entry never runs."""
    text = DEMO.read_text()
    text = text.replace("  service:  { approvals: 1 }", "  service: {approvals: 1, confirm: true, min_review: 2m, channels: [ssh, unverified], "
                                                        "paging: {routing_key_env: PD_CHECKOUT, escalate_to_env: PD_LEADS}}")
    text = text.replace("  - id: scale-queue-workers\n", "  - id: scale-queue-workers\n    mode: shadow\n")
    text = text.replace("  - id: rollback-payments-webhook\n", "  - id: rollback-payments-webhook\n    paging: {routing_key_env: PD_PAYMENTS}\n")
    assert "confirm: true" in text and "mode: shadow" in text
    text += "drills: {rate: 0.1}\n"
    wl = tmp_path / "wl.yaml"
    wl.write_text(text)
    checked = run("whitelist", "check", str(wl))
    shadow = run("whitelist", "explain", str(wl), "scale-queue-workers")
    service = run("whitelist", "explain", str(wl), "rollback-checkout")
    assert checked.returncode == shadow.returncode == service.returncode == 0, checked.stderr + shadow.stderr
    row = next(line for line in checked.stdout.splitlines() if "scale-queue-workers" in line)
    assert "SHADOW (never runs)" in row and "never runs (shadow)" in row
    assert "each approval repeats the exact target" in checked.stdout and "Drills: 10% of approval requests" in checked.stdout
    service_row = next(line for line in checked.stdout.splitlines() if line.startswith("│ service "))
    assert "$PD_CHECKOUT, error; then $PD_LEADS" in service_row  # where the tier's incidents page
    assert "the worker's key, warning" in next(line for line in checked.stdout.splitlines() if line.startswith("│ instance "))
    assert "Entries that page a service of their own: rollback-payments-webhook ($PD_PAYMENTS)." in checked.stdout
    assert "Mode:        SHADOW" in shadow.stdout and "NEVER executed" in shadow.stdout
    assert "Would allow: change the desired capacity" in shadow.stdout and "Allows:" not in shadow.stdout
    for said in ("counted through ssh, unverified (a typed name counts here: it proves nothing)",
                 "each approval repeats the exact target (--confirm)",
                 "an approval within 2m of the request is flagged as fast",
                 "Autonomy:    alone on at most", "open the breaker", "Drills:      10% of approval requests",
                 "Pages:       the routing key in $PD_CHECKOUT, severity error; unanswered at the escalation time, "
                 "also the key in $PD_LEADS"):
        assert said in service.stdout, said
    assert "Pages:" not in shadow.stdout  # a shadow entry never pages


def test_a_generator_that_produces_nothing_says_why(tmp_path: Path):
    documents = run("whitelist", "ssm-documents", str(DEMO))  # the demo's one unit is user-scope
    only_systemd = tmp_path / "wl.yaml"
    only_systemd.write_text(whitelist_text(SYSTEMD_ENTRY))
    policy = run("whitelist", "iam-policy", str(only_systemd))
    assert documents.returncode == 0 and documents.stdout.strip() == "{}"
    assert "no SSM documents" in documents.stderr and "user-scope" in documents.stderr
    assert policy.returncode == 0 and "an empty policy" in policy.stderr and "has no AWS entry" in policy.stderr
