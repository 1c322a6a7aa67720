"""Loading the evidence configuration: every problem of the file, each at its line, in one pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.whitelist.conftest import models_within
from selfheal.evidence.config import EvidenceConfig

DEMO = Path(__file__).resolve().parents[1] / "deploy" / "demo" / "evidence.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "evidence.yaml"
    path.write_text(text)
    return path


def test_the_demo_configuration_loads_hashed_and_an_empty_file_allows_nothing(tmp_path):
    loaded = EvidenceConfig.load(DEMO)
    assert loaded.sha256 == hashlib.sha256(DEMO.read_bytes()).hexdigest() and loaded.config.allow
    assert EvidenceConfig.load(write(tmp_path, "")).config == EvidenceConfig()


def test_a_duplicate_key_and_the_other_problems_are_reported_together(tmp_path):
    path = write(tmp_path, """\
bounds: {window: 25h}
files:
  app: {path: /var/log/app.log}
  app: {path: relative.log}
  Bad_Id: {path: /var/log/b.log}
journals:
  api: {unit: api.service, scope: session}
allow:
  restart-api: [journal:api, file:nope]
colour: red
""")
    with pytest.raises(ValueError) as info:
        EvidenceConfig.load(path)
    assert str(info.value).splitlines() == [
        f"{path}:1: bounds.window: must be at most 24h, got 1d1h",
        f"{path}:4: files.app: key given twice in the same mapping",
        f"{path}:5: files.Bad_Id: not a valid id: ids match ^[a-z0-9][a-z0-9_.\\-]{{0,63}}$",
        f"{path}:7: journals.api.scope: Input should be 'system' or 'user'",
        (f"{path}:9: allow.restart-api[1]: unknown source 'file:nope'; the configured sources are: "
         "aws, file:Bad_Id, file:app, journal:api"),
        f"{path}:10: colour: unknown key (not part of the evidence configuration)",
    ]


def test_an_unknown_source_alone_is_placed_at_its_line(tmp_path):
    path = write(tmp_path, "files:\n  app: {path: /var/log/app.log}\nallow:\n  x:\n    - file:app\n    - prom:gone\n")
    with pytest.raises(ValueError) as info:
        EvidenceConfig.load(path)
    assert str(info.value) == f"{path}:6: allow.x[1]: unknown source 'prom:gone'; the configured sources are: aws, file:app"


def test_the_model_still_refuses_an_unknown_source_without_the_loader():
    with pytest.raises(ValidationError, match=r"allow.x\[0\]: unknown source 'file:gone'"):
        EvidenceConfig.model_validate({"allow": {"x": ["file:gone"]}})


def test_every_model_of_the_configuration_forbids_unknown_keys():
    models = models_within(EvidenceConfig)
    assert len(models) >= 6 and all(m.model_config.get("extra") == "forbid" for m in models), models
