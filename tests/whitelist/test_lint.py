"""``selfheal whitelist lint`` (issue 26): each rule fires on a file made for it, with
PATH:LINE and a reason, and stays quiet on the demo; --strict and invalid files exit as
documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.activities.diagnose import load_rules
from selfheal.review.lint import lint
from selfheal.whitelist import load_whitelist

ROOT = Path(__file__).resolve().parents[2]
DEMO, DEMO_RULES = ROOT / "deploy/demo/whitelist.yaml", ROOT / "deploy/demo/diagnosis.yaml"
PLACE = 'region: eu-west-1, account: "123456789012"'


def entry(id_: str, match: str, *, target: str = f"{{cluster: c, service: s, task_definition: 's:1', {PLACE}}}",
          kind: str = "ecs.rollback", verify: str = "{timeout: 1m, alert_resolves: true}", approvers: str = "[alice]") -> str:
    return f"""  - id: {id_}
    kind: {kind}
    target: {target}
    blast_radius: service
    approvers: {{people: {approvers}}}
    rate_limit: {{max_executions: 1, window: 1h}}
    cooldown: 0s
    match: [{match}]
    verify: {verify}
"""


def whitelist(*entries: str, tiers: str = "tiers: {service: {approvals: 1}}\n", people: str = "") -> str:
    return f"version: 1\nmetadata: {{reviewed_by: [alice], reviewed_at: 2026-12-07}}\n{tiers}{people}entries:\n" + "".join(entries)


def findings(tmp_path: Path, text: str, rules: str | None = None, hosts: list[str] | None = None) -> list[str]:
    path = tmp_path / "wl.yaml"
    path.write_text(text)
    loaded_rules, rules_path = None, tmp_path / "rules.yaml"
    if rules is not None:
        rules_path.write_text(rules)
        loaded_rules = load_rules(rules_path)
    found = lint(load_whitelist(path).whitelist, str(path), path.read_bytes(), loaded_rules, str(rules_path),
                 rules_path.read_bytes() if rules is not None else b"", hosts)
    return [str(f).replace(str(tmp_path) + "/", "") for f in found]


def test_the_demo_is_quiet():
    found = lint(load_whitelist(DEMO).whitelist, str(DEMO), DEMO.read_bytes(), load_rules(DEMO_RULES), str(DEMO_RULES),
                 DEMO_RULES.read_bytes(), ["localhost"])
    assert found == []


def test_entries_one_alert_can_match_are_shown_with_an_example(tmp_path):
    text = whitelist(entry("a", "'alertname=\"ApiDown\"'"), entry("b", "'alertname=~\"ApiDown|DbDown\"', 'env=\"prod\"'"),
                     entry("c", "'alertname=\"DbDown\"', 'env!=\"prod\"'"), entry("d", "'alertname=~\"Api.*\"'"),
                     entry("e", "'alertname=~\"Db.*\"'"))
    found = findings(tmp_path, text)
    assert 'wl.yaml:21: overlap: a and b can match one alert, e.g. {alertname="ApiDown", env="prod"}: which one acts is ' \
           "the diagnosis's choice, not the file's" in found
    assert not any(" b and c " in f for f in found)  # env="prod" and env!="prod": never both
    assert any(f.startswith("wl.yaml:39: overlap: a and d") for f in found)  # a value the regex takes
    assert not any(" c and d " in f for f in found)  # DbDown is no Api.*: decided
    assert any("may-overlap: d and e may match one alert" in f for f in found)  # two regular expressions: not decided here


def test_what_the_rules_never_propose_and_proposals_their_own_matchers_exclude(tmp_path):
    text = whitelist(entry("a", "'alertname=\"ApiDown\"'"), entry("b", "'alertname=\"DbDown\"'"))
    rules = """signatures:
  - id: api
    summary: the API is down
    match: ['alertname="ApiDown"']
    propose: a
  - id: wrong
    summary: proposes an entry for another alert
    match: ['alertname="Disk"']
    propose: a
"""
    found = findings(tmp_path, text, rules)
    assert "wl.yaml:14: unproposed: b: no diagnosis signature proposes it, so it never runs" in found
    assert any(f.startswith("rules.yaml:9: unreachable: signature wrong proposes a") for f in found)


def test_unused_tiers_idle_people_lone_places_and_own_checks_only(tmp_path):
    tiers = "tiers: {service: {approvals: 1}, region: {approvals: 1}}\n"  # service: the first of the highest
    people = 'people:\n  alice: {token_sha256: ["' + "a" * 64 + '"]}\n  zed: {token_sha256: ["' + "b" * 64 + '"]}\n'
    other = PLACE.replace("123456789012", "123456789013")
    text = whitelist(entry("a", "'alertname=\"A\"'"), entry("b", "'alertname=\"B\"'"),
                     entry("c", "'alertname=\"C\"'", target=f"{{cluster: c, service: s, task_definition: 's:1', {other}}}",
                           verify="{timeout: 1m}"), tiers=tiers, people=people)
    found = findings(tmp_path, text)
    assert any(f.endswith("unused-tier: tier region: no entry uses it") for f in found)
    assert any("idle-person: zed has identities but may approve nothing" in f for f in found)
    assert not any("idle-person: alice" in f for f in found)
    assert any("lone-place: c: account 123456789013 is used by this entry only (others: 123456789012); a typo?" in f
               for f in found)
    assert any(f.endswith("verify-own-only: c: verified only by the action's own check; an http check or alert_resolves "
                          "would say whether the symptom cleared") for f in found)


def test_host_globs_against_an_inventory(tmp_path):
    systemd = "{unit: api.service, host: 'web-*'}"
    text = whitelist(entry("a", "'alertname=\"A\"'", kind="systemd.restart", target=systemd),
                     entry("b", "'alertname=\"B\"'", kind="systemd.restart", target="{unit: api.service, host: 'db-*'}"))
    found = findings(tmp_path, text, hosts=["web-1", "web-2"])
    assert any("host-glob: a: 'web-*' matches every one of the 2 hosts" in f for f in found)
    assert any("host-glob: b: 'db-*' matches none of the 2 hosts" in f for f in found)


def test_a_finding_is_silenced_only_by_its_own_rule_with_a_reason_in_the_file(tmp_path):
    quiet = entry("a", "'alertname=\"A\"'", verify="{timeout: 1m}").replace(
        "    verify:", "    # lint: allow verify-own-only (the unit's state is all there is)\n    verify:")
    assert not any("verify-own-only" in f for f in findings(tmp_path, whitelist(quiet)))
    wrong = quiet.replace("allow verify-own-only", "allow overlap")
    assert any("verify-own-only" in f for f in findings(tmp_path, whitelist(wrong)))


@pytest.mark.parametrize("strict, code", [(False, 0), (True, 1)])
def test_the_command_exits_1_only_with_strict_and_2_for_an_invalid_file(tmp_path, strict, code):
    path = tmp_path / "wl.yaml"
    path.write_text(whitelist(entry("a", "'alertname=\"A\"'", verify="{timeout: 1m}")))
    ran = subprocess.run([sys.executable, "-m", "selfheal.cli", "whitelist", "lint", str(path), "--json",
                          *(["--strict"] if strict else [])], capture_output=True, text=True, timeout=60)
    assert ran.returncode == code, ran.stderr
    assert [f["rule"] for f in json.loads(ran.stdout)["findings"]] == ["verify-own-only"]
    path.write_text("version: 1\nentries: [{id: x}]\n")
    bad = subprocess.run([sys.executable, "-m", "selfheal.cli", "whitelist", "lint", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and f"{path}:2:" in bad.stderr
