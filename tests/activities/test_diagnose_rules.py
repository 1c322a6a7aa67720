"""Loading the diagnosis rules: every problem of the file, each at its line, in one pass."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tests.whitelist.conftest import models_within
from selfheal.activities.diagnose import DiagnosisRules, load_rules

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "diagnosis.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diagnosis.yaml"
    path.write_text(text)
    return path


def test_the_demo_rules_load_and_an_empty_file_means_the_defaults(tmp_path):
    assert load_rules(DEMO).signatures
    assert load_rules(write(tmp_path, "# no signatures yet\n")) == DiagnosisRules()


def test_a_duplicate_key_and_the_other_problems_are_reported_together(tmp_path):
    path = write(tmp_path, """\
lookback: 15m
max_lines: 0
signatures:
  - id: pool
    summary: pool exhausted
    match: ['alertname="Down"']
    pattern: '(unclosed'
    propose: restart-api
    propose: restart-db
    confdence: 0.8
  - summary: no id
    match: []
""")
    with pytest.raises(ValueError) as info:
        load_rules(path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:2: max_lines: Input should be greater than or equal to 1",
        f"{path}:7: signatures[0].pattern: invalid regular expression: missing ), unterminated subpattern at position 0",
        f"{path}:9: signatures[0].propose: key given twice in the same mapping",
        f"{path}:10: signatures[0].confdence: unknown key (not part of the diagnosis rules format)",
        f"{path}:11: signatures[1].id: required key is missing",
        f"{path}:12: signatures[1].match: List should have at least 1 item after validation, not 0",
    ]


def test_the_first_of_two_values_is_kept_for_validation(tmp_path):
    with pytest.raises(ValueError) as info:
        load_rules(write(tmp_path, "lookback: 5m\nlookback: never\n"))
    assert str(info.value) == f"{tmp_path / 'diagnosis.yaml'}:2: lookback: key given twice in the same mapping"


@pytest.mark.parametrize("text, line, field", [
    ("lokback: 15m\n", 1, "lokback"),
    ("signatures:\n  - id: a\n    summary: s\n    match: ['a=\"b\"']\n    journal: {unit: a.service, user: x}\n", 5, "signatures[0].journal.user"),
])
def test_unknown_keys_are_refused(tmp_path, text, line, field):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}:{line}: {field}: unknown key (not part of the diagnosis rules format)"


def test_every_model_of_the_rules_forbids_unknown_keys():
    models = models_within(DiagnosisRules)
    assert len(models) >= 3 and all(m.model_config.get("extra") == "forbid" for m in models), models


def test_durations_still_read_as_before(tmp_path):
    assert load_rules(write(tmp_path, "lookback: 1h\n")).lookback == timedelta(hours=1)
