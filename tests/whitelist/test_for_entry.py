"""``Whitelist.for_entry`` (what an entry's governor holds) decides exactly as the whole file
does: the tiers it leaves out are ones no decision on that entry can reach (issue 21)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from temporalio.contrib.pydantic import pydantic_data_converter

from selfheal.contract.governor import Brake, Current, EntryState
from selfheal.whitelist import ActionRequest, Execution, load_whitelist_bytes, matching_entries, target_of
from selfheal.whitelist.vocabulary import Act, Hold
from selfheal.workflows.governed import governed_decision

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
# Tiers in an order where "first of the highest" and "first of the lowest that needs
# someone" are easy to get wrong, and an entry that escalates to a tier of its own choice.
TIERED = (ROOT / "deploy/demo/whitelist.yaml").read_text().replace(
    "tiers:\n", "tiers:\n  canary: { approvals: 1 }\n  audit: { approvals: 2 }\n", 1).replace(
    "    blast_radius: fleet\n", "    blast_radius: fleet\n    autonomy: { escalate_to: audit }\n", 1)


def states(entry_id: str, targets: list[str]):
    yield "nothing", dict(executions=[], autonomous=[], failures=[])
    yield "busy", dict(executions=[Execution(entry_id=entry_id, started_at=NOW - timedelta(minutes=m), incident_id=f"e{m}",
                                             targets=targets) for m in (5, 20, 40)], autonomous=[], failures=[])
    yield "alone elsewhere", dict(executions=[], failures=[], autonomous=[
        Act(targets=[f"other-{n}"], at=NOW - timedelta(minutes=1), incident_id=f"a{n}") for n in range(6)])
    yield "failed before", dict(executions=[], autonomous=[], failures=[
        Act(targets=targets, at=NOW - timedelta(hours=1), incident_id="f", note="verification_failed")])
    yield "breaker", dict(executions=[], autonomous=[], failures=[],
                          brake=Brake(breaker=Hold(by="breaker", at=NOW, reason="3 failures")))
    yield "paused", dict(executions=[], autonomous=[], failures=[],
                         brake=Brake(paused=[Hold(by="bob", at=NOW, reason="config push")]))
    yield "a model chose", dict(executions=[], autonomous=[], failures=[], raised_by=["the model chose the parameters"])


@pytest.mark.parametrize("text", [(ROOT / "deploy/demo/whitelist.yaml").read_text(), TIERED], ids=["demo", "more tiers"])
def test_an_entrys_excerpt_decides_as_the_whole_file(text):
    whole = load_whitelist_bytes(text.encode()).whitelist
    for entry in whole.entries:
        request = ActionRequest(entry_id=entry.id, target=target_of(entry), params={})
        for name, state in states(entry.id, ["localhost"]):
            full = governed_decision(whole, request, incident_id="now", now=NOW, **state)
            excerpt = governed_decision(whole.for_entry(entry.id), request, incident_id="now", now=NOW, **state)
            assert excerpt == full, (entry.id, name)
            for policy in carried(entry.id, whole.for_entry(entry.id)):
                assert governed_decision(policy, request, incident_id="now", now=NOW, **state) == full, (entry.id, name)
        assert set(whole.for_entry(entry.id).tiers) <= set(whole.tiers)
        # Prose, paging and the file's metadata are for people, the alert matchers and the
        # verification for the incident: the governor does not carry them.
        sent = wire(EntryState(entry_id=entry.id, policies={"h": whole.for_entry(entry.id)}))
        assert not {"description", "paging", "match", "verify", "metadata"} & set(keys(sent)), entry.id
        assert entry.match and entry.verify and whole.metadata.reviewed_by  # the file did have them
        # No matchers would select every alert: what the governor holds cannot be matched at all.
        with pytest.raises(TypeError):
            matching_entries(whole.for_entry(entry.id), {"alertname": "anything"})
    assert whole.metadata.description
    assert any(e.description for e in whole.entries)
    assert len(whole.for_entry(whole.entries[0].id).tiers) < len(whole.tiers)  # it does leave some out


def wire(message) -> dict:
    """``message`` as a governor's history holds it."""
    import json
    return json.loads(pydantic_data_converter.payload_converter.to_payloads([message])[0].data)


def carried(entry_id: str, policy):
    """``policy`` after a trip through a governor's history (its state) and through the answer
    to an activity's query (``Current``), as each receiver decides with it."""
    convert = pydantic_data_converter.payload_converter
    state = convert.from_payloads(convert.to_payloads([EntryState(entry_id=entry_id, policies={"h": policy})]), [EntryState])
    current = convert.from_payloads(convert.to_payloads([Current(whitelist_sha256="h", policy=policy)]), [Current])
    return [state[0].policies["h"], current[0].policy]


def keys(value) -> list[str]:
    """Every key at any depth of a JSON document."""
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *keys(v)]]
    return [k for v in value for k in keys(v)] if isinstance(value, list) else []
