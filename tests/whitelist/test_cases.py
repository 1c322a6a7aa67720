"""``selfheal whitelist test`` (issue 26): the demo's cases pass; a whitelist changed in the
ways reviews miss fails the case that guards against it, with a readable diff; files that
are not cases are refused with PATH:LINE; --json and --junit say the same to machines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy/demo"
CASES = DEMO / "whitelist.test.yaml"


def selfheal(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfheal.cli", "whitelist", "test", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_the_demo_cases_pass():
    ran = selfheal(CASES)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith("13 case(s): 13 passed, 0 failed — SUCCESS")


@pytest.mark.parametrize("change, before, after, case, diff", [
    ("a widened bound", "max_step: 2 ", "max_step: 3 ", "a step past max_step (1 to 4) is denied, never clamped",
     '    decision:\n      exp: "deny"\n      got: "needs_approval"'),
    ("a lowered tier", "blast_radius: service", "blast_radius: instance",
     "a checkout rollback waits for one person of sre or dave, to the pinned revision only",
     '    decision:\n      exp: "needs_approval"\n      got: "auto"'),
    ("a broader host glob", "host: localhost ", "host: '*' ",
     "whatever host the alert names, the restart is on the one host the entry pins", '"host": "web-7"'),
    ("an added matcher", '      - service="demo-api"\n', '      - service="demo-api"\n      - env="prod"\n',
     "the demo API's exhausted pool is restarted by itself, on this host", '    matched:\n      exp: ["restart-demo-api"]\n      got: []'),
])
def test_a_whitelist_changed_the_way_reviews_miss_fails_its_case_with_a_diff(tmp_path, change, before, after, case, diff):
    text = (DEMO / "whitelist.yaml").read_text()
    assert before in text, change
    changed = tmp_path / "whitelist.yaml"
    changed.write_text(text.replace(before, after, 1))
    ran = selfheal(CASES, "--whitelist", changed)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"  FAILED: {case}\n" in ran.stdout and diff in ran.stdout, ran.stdout


def test_json_and_junit_say_the_same_to_machines(tmp_path):
    changed = tmp_path / "whitelist.yaml"
    changed.write_text((DEMO / "whitelist.yaml").read_text().replace("max_step: 2 ", "max_step: 3 ", 1))
    report = tmp_path / "junit.xml"
    ran = selfheal(CASES, "--whitelist", changed, "--json", "--junit", report)
    assert ran.returncode == 1
    doc = json.loads(ran.stdout)
    [failed] = [r for r in doc["results"] if not r["ok"]]
    assert failed["failures"][0] == {"field": "decision", "expected": "deny", "got": "needs_approval"}
    suite = ElementTree.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("13", "1")
    [failure] = suite.iter("failure")
    assert "decision: expected \"deny\", got \"needs_approval\"" in failure.text


@pytest.mark.parametrize("text, where", [
    ("whitelist: whitelist.yaml\nat: 2026-12-07T03:00:00Z\ncases:\n  - name: x\n    alerts: [{labels: {a: b}}]\n"
     "    expect: {decison: auto}\n", "cases.yaml:6: cases[0].expect.decison"),
    ("whitelist: whitelist.yaml\nwhitelist: other.yaml\nat: 2026-12-07T03:00:00Z\ncases: []\n", "cases.yaml:2:"),
    ("whitelist: whitelist.yaml\nat: yesterday\ncases:\n  - name: x\n    alerts: []\n    expect: {}\n", "cases.yaml:2: at"),
])
def test_a_file_that_is_not_cases_is_refused_with_path_and_line_and_runs_nothing(tmp_path, text, where):
    (tmp_path / "cases.yaml").write_text(text)
    ran = selfheal("cases.yaml", cwd=tmp_path)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert where in ran.stderr and "no case was run" in ran.stderr
    assert "Unit Testing" not in ran.stdout
