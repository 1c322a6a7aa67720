import textwrap
from pathlib import Path

import pytest

from selfheal.whitelist import load_whitelist_bytes

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "whitelist.yaml"

BASE = """\
version: 1
metadata:
  reviewed_by: [alice]
  reviewed_at: 2026-11-25
groups:
  sre: [alice, bob, carol]
entries:
"""

SYSTEMD_ENTRY = """\
  - id: restart-api
    kind: systemd.restart
    target: {unit: api.service, host: "web-*"}
    blast_radius: instance
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 2, window: 1h}
    cooldown: 10m
    match: ['alertname="ApiDown"']
    verify: {timeout: 1m}
"""


def whitelist_text(*entries: str, head: str = BASE) -> str:
    return head + "".join(textwrap.dedent(e) if not e.startswith("  - ") else e for e in entries)


@pytest.fixture
def demo():
    return load_whitelist_bytes(DEMO.read_bytes(), str(DEMO)).whitelist


def models_within(model) -> set:
    """Every pydantic model a file of ``model`` can hold: to check that each forbids unknown keys."""
    from pydantic import BaseModel

    def types(annotation) -> list:
        return [annotation, *[t for arg in getattr(annotation, "__args__", ()) for t in types(arg)]]

    seen, todo = set(), [model]
    while todo:
        seen.add(current := todo.pop())
        for field in current.model_fields.values():
            todo += [t for t in types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel) and t not in seen]
    return seen
