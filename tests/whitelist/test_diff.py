"""`selfheal whitelist diff OLD NEW`: each change marked as widening or narrowing authority;
exit 1 when anything widens; a field without a rule counts as widening."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from selfheal.cli import app
from selfheal.whitelist import load_whitelist_bytes
from selfheal.whitelist import models as m
from selfheal.whitelist.diff import RULES, UNCLASSIFIED, diff, rule_for, widens

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2M1wzYSj6cNnNAHHOqGQyvXPYSkgy0e56uc/nhVxrb alice@example"
BASE = f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-25}}
tiers:
  instance: {{approvals: 0}}
  service: {{approvals: 1, confirm: true, min_review: 30s}}
  fleet: {{approvals: 2, confirm: true, min_review: 30s}}
groups:
  sre: [alice, bob, carol]
people:
  alice: {{ssh_keys: ["{KEY}"]}}
  bob: {{slack: [T0AAA:U0CCC]}}
drills: {{rate: 0.1}}
entries:
  - id: restart-api
    kind: systemd.restart
    target: {{unit: api.service, host: "web-*"}}
    blast_radius: service
    approvers: {{groups: [sre]}}
    rate_limit: {{max_executions: 3, window: 1h}}
    cooldown: 5m
    match: ['alertname="ApiDown"', 'env="prod"']
    verify: {{timeout: 1m, http: {{url: "http://127.0.0.1:8080/healthz"}}, alert_resolves: true}}
    autonomy: {{max_targets: 2, window: 10m}}
    breaker: {{failures: 3, window: 1h}}
  - id: scale-workers
    kind: asg.scale
    target: {{group: workers, region: eu-west-1, account: "123456789012"}}
    bounds: {{min_capacity: 2, max_capacity: 8, max_step: 2}}
    blast_radius: instance
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 5, window: 1h}}
    cooldown: 0s
    match: ['alertname="Backlog"']
    verify: {{timeout: 30s}}
  - id: reboot-batch
    kind: ec2.reboot
    target: {{tags: {{Role: batch}}, max_instances: 2, region: eu-west-1, account: "123456789012"}}
    blast_radius: fleet
    approvers: {{people: [alice, bob, carol]}}
    rate_limit: {{max_executions: 5, window: 1h}}
    cooldown: 0s
    match: ['alertname="BatchSilent"']
    verify: {{timeout: 30s}}
    mode: shadow
"""

# (a change to BASE, what it must be classified as, words the line must contain)
TABLE = [
    ("max_executions: 3", "max_executions: 10", "widens", "rate limit"),
    ("max_executions: 3", "max_executions: 1", "narrows", "rate limit"),
    ("window: 1h}\n    cooldown: 5m", "window: 10m}\n    cooldown: 5m", "widens", "rate limit window"),
    ("cooldown: 5m", "cooldown: 1m", "widens", "cooldown"),
    ("cooldown: 5m", "cooldown: 30m", "narrows", "cooldown"),
    ("blast_radius: service", "blast_radius: instance", "widens", "service (1 approval(s)) -> instance (0"),
    ("blast_radius: service", "blast_radius: fleet", "narrows", "-> fleet (2"),
    ("service: {approvals: 1,", "service: {approvals: 0,", "widens", "approvals needed"),
    ("instance: {approvals: 0}", "instance: {approvals: 1}", "narrows", "approvals needed"),
    ("approvals: 1, confirm: true", "approvals: 1, confirm: false", "widens", "repeat the target"),
    ("confirm: true, min_review: 30s}\n  fleet", "confirm: true, min_review: 5s}\n  fleet", "widens", "min_review"),
    ("service: {approvals: 1, confirm", "service: {approvals: 1, channels: [ssh, slack, token, unverified], confirm", "widens", "adds unverified"),
    ("service: {approvals: 1, confirm", "service: {approvals: 1, channels: [ssh], confirm", "narrows", "removes slack"),
    ("sre: [alice, bob, carol]", "sre: [alice, bob, carol, mallory]", "widens", "adds mallory"),
    ("sre: [alice, bob, carol]", "sre: [alice, bob]", "narrows", "removes carol"),
    ("approvers: {groups: [sre]}", "approvers: {groups: [sre], people: [carol]}", "widens", "adds carol"),
    ("approvers: {people: [alice, bob, carol]}", "approvers: {people: [alice, bob]}", "narrows", "removes carol"),
    ('host: "web-*"', 'host: "*"', "widens", "other or more hosts"),
    ('host: "web-*"', 'host: "web-1"', "narrows", "a subset"),
    ("unit: api.service", "unit: db.service", "widens", "systemd unit"),
    ("match: ['alertname=\"ApiDown\"', 'env=\"prod\"']", "match: ['alertname=\"ApiDown\"']", "widens", "removes env"),
    ("match: ['alertname=\"ApiDown\"', 'env=\"prod\"']", "match: ['alertname=\"ApiDown\"', 'env=\"prod\"', 'team=\"web\"']", "narrows", "adds team"),
    ("max_capacity: 8", "max_capacity: 20", "widens", "maximum capacity"),
    ("min_capacity: 2", "min_capacity: 0", "widens", "minimum capacity"),
    ("max_step: 2", "max_step: 1", "narrows", "largest capacity step"),
    ("Role: batch}", "Role: batch, Env: prod}", "narrows", "also carry the tag Env=prod"),
    ("tags: {Role: batch}", "tags: {Role: etl}", "widens", "required tag value"),
    ("max_instances: 2", "max_instances: 10", "widens", "instances per action"),
    ("    mode: shadow\n", "    mode: active\n", "widens", "mode: shadow -> active"),
    ("    verify: {timeout: 30s}\n    mode: shadow", "    verify: {timeout: 30s}\n    mode: shadow\n    description: x", "neutral", "description"),
    ("max_targets: 2", "max_targets: 50", "widens", "autonomous targets"),
    ("autonomy: {max_targets: 2, window: 10m}", "autonomy: {max_targets: 2, window: 10m, escalate_to: service}", "widens", "escalates to fleet (2 approval(s)) -> service (1"),
    ("breaker: {failures: 3, window: 1h}", "breaker: {failures: 10, window: 1h}", "widens", "open the breaker"),
    ("alert_resolves: true", "alert_resolves: false", "widens", "alert to resolve"),
    (', http: {url: "http://127.0.0.1:8080/healthz"}', "", "widens", "drops the HTTP check"),
    ("drills: {rate: 0.1}", "drills: {rate: 0}", "widens", "drill rate"),
    ("drills: {rate: 0.1}", "drills: {rate: 0.5}", "narrows", "drill rate"),
    ('region: eu-west-1, account: "123456789012"}\n    bounds', 'region: us-east-1, account: "123456789012"}\n    bounds', "widens", "AWS region"),
    ("alice: {ssh_keys: [", "alice: {slack: [T0AAA:U0BBB], ssh_keys: [", "widens", "Slack users"),
    (f'  alice: {{ssh_keys: ["{KEY}"]}}\n', "", "narrows", "person removed"),
    ("reviewed_by: [alice]", "reviewed_by: [alice, bob]", "neutral", "reviewed by"),
    ("entries:\n", "entries:\n  - id: restart-db\n    kind: systemd.restart\n    target: {unit: db.service, host: db-1}\n    blast_radius: instance\n    approvers: {groups: [sre]}\n    rate_limit: {max_executions: 1, window: 1h}\n    cooldown: 0s\n    match: ['alertname=\"DbDown\"']\n    verify: {timeout: 30s}\n", "widens", "new entry: systemd.restart by itself"),
]


def load(text: str):
    return load_whitelist_bytes(text.encode(), "test.yaml").whitelist


@pytest.mark.parametrize("old,new,direction,words", TABLE, ids=[f"{d}:{w}" for _, _, d, w in TABLE])
def test_each_change_is_classified(old, new, direction, words):
    assert BASE.count(old) == 1, old
    changes = diff(load(BASE), load(BASE.replace(old, new)))
    assert changes, "the change went unseen"
    assert any(c.direction == direction and words in c.words for c in changes), changes
    # The line that says it is not also contradicted by another classification of the same path.
    assert widens(changes) == any(c.direction == "widens" for c in changes)


def test_no_change_no_lines_and_removing_an_entry_narrows():
    assert diff(load(BASE), load(BASE)) == []
    start = BASE.index("  - id: scale-workers")
    end = BASE.index("  - id: reboot-batch")
    changes = diff(load(BASE), load(BASE[:start] + BASE[end:]))
    assert [(c.direction, c.path) for c in changes] == [("narrows", "entries.scale-workers")]


def _schema_paths(model: type[BaseModel], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every field path of the whitelist format, as the diff walks it (entries by id)."""
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + (name,)
        paths.extend(_paths_of(field.annotation, path))
    return paths


def _paths_of(annotation, path) -> list[tuple[str, ...]]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _paths_of(args[0], path)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out = []
        for a in args:
            if a is not type(None):
                out.extend(p for p in _paths_of(a, path) if p not in out)
        return out or [path]
    if origin is dict:
        return [path + ("*",)] + [p for p in _paths_of(args[1], path + ("*",)) if p != path + ("*",)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _schema_paths(annotation, path)
    return [path]


def test_every_field_of_the_format_has_a_rule():
    paths = [p for p in _schema_paths(m.Whitelist, ()) if p[0] != "entries"]
    for kind in typing.get_args(typing.get_args(m.Entry)[0]):
        paths += [p for p in _schema_paths(kind, ("entries", "*")) if p not in paths]
    missing = [".".join(p) for p in paths if rule_for(p) is None and rule_for(p[:-1] + ("[]",)) is None]
    assert missing == [], f"fields without a diff rule (they would count as widening): {missing}"
    assert len(paths) > 50  # the walk saw the whole format


def test_a_field_without_a_rule_counts_as_widening(monkeypatch):
    monkeypatch.delitem(RULES, ("entries", "*", "cooldown"))
    [change] = diff(load(BASE), load(BASE.replace("cooldown: 5m", "cooldown: 1h")))
    assert change.direction == "widens" and UNCLASSIFIED in change.words


def test_the_command_prints_lines_and_exits_non_zero_only_when_something_widens(tmp_path: Path):
    old, wider, narrower = tmp_path / "old.yaml", tmp_path / "wider.yaml", tmp_path / "narrower.yaml"
    old.write_text(BASE)
    wider.write_text(BASE.replace("max_executions: 3", "max_executions: 10").replace("cooldown: 5m", "cooldown: 30m"))
    narrower.write_text(BASE.replace("cooldown: 5m", "cooldown: 30m"))
    runner = CliRunner()
    result = runner.invoke(app, ["whitelist", "diff", str(old), str(wider)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("WIDENS") and "rate limit" in line and "3 -> 10" in line for line in lines)
    assert any(line.startswith("narrows") and "cooldown" in line for line in lines)
    assert "1 widening" in result.output
    result = runner.invoke(app, ["whitelist", "diff", str(old), str(narrower)])
    assert result.exit_code == 0 and "narrows" in result.output and "WIDENS" not in result.output
    result = runner.invoke(app, ["whitelist", "diff", str(old), str(wider), "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and doc["widens"] is True
    assert {"direction": "widens", "path": "entries.restart-api.rate_limit.max_executions"}.items() <= doc["changes"][0].items()
    result = runner.invoke(app, ["whitelist", "diff", str(old), str(wider), "--markdown"])
    assert result.exit_code == 1 and "| widens |" in result.output


def test_an_invalid_side_refuses_with_file_line_and_field(tmp_path: Path):
    old, bad = tmp_path / "old.yaml", tmp_path / "bad.yaml"
    old.write_text(BASE)
    bad.write_text(BASE.replace("max_executions: 3", "max_executions: lots"))
    result = CliRunner().invoke(app, ["whitelist", "diff", str(old), str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "max_executions" in result.output
