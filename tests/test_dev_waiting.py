"""What ``selfheal dev`` prints when an incident comes to wait (selfheal.dev.waiting)."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from datetime import datetime, timezone
from pathlib import Path

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from selfheal import search
from selfheal.contract import ActionRequest, AuditRecord, Decision
from selfheal.contract.workflows import DRILL_WORKFLOW, INCIDENT_WORKFLOW
from selfheal.dev import waiting
from selfheal.whitelist import load_whitelist
from tests.workflows.helpers import wait_for

DEMO = load_whitelist(Path(__file__).resolve().parents[1] / "deploy" / "demo" / "whitelist.yaml").whitelist
KEYS = {"alice": Path("/keys/alice key"), "bob": Path("/keys/bob")}


def record(tier: str, approvers: list[str]) -> AuditRecord:
    return AuditRecord(incident_id="checkout.generic-1~ab", status="awaiting_approval",
                       request=ActionRequest(entry_id="rollback-checkout", target={"service": "checkout"}),
                       decision=Decision.needs_approval("rollback-checkout", tier, 1, approvers))


def test_a_line_per_demo_person_the_decision_allows_each_with_its_key_and_the_stack():
    lines = waiting.approve_lines("/venv/bin/selfheal", "--address 127.0.0.1:7233", record("service", ["bob", "carol"]),
                                  DEMO, KEYS)
    assert lines == ["/venv/bin/selfheal approve 'checkout.generic-1~ab' --as bob --key /keys/bob --address 127.0.0.1:7233"]
    both = waiting.approve_lines("s", "--address a", record("service", ["alice", "bob"]), DEMO, KEYS)
    assert shlex.split(both[0])[shlex.split(both[0]).index("--key") + 1] == "/keys/alice key"  # quoted, arrives whole
    told = waiting.announcement(record("service", ["bob"]), lines)
    assert told.startswith("checkout.generic-1~ab waits for 1 approval(s) of rollback-checkout (service tier).")
    assert waiting.announcement(record("service", ["carol"]), []).endswith("no demo key may approve it (approvers: carol)")


def test_an_id_a_terminal_would_act_on_is_shown_as_code_and_gets_no_line():
    hostile = record("service", ["alice"]).model_copy(update={"incident_id": "x\x1b[2Jy\u202e"})
    assert waiting.approve_lines("s", "--address a", hostile, DEMO, KEYS) == []
    told = waiting.announcement(hostile, [])
    assert "\x1b" not in told and "\u202e" not in told and told.startswith("x\\x1b[2Jy\\u202e waits for 1 approval(s)")
    assert told.endswith("its id has characters a terminal acts on, so no approve line is printed for it")


def test_a_tier_that_asks_to_confirm_gets_a_line_that_asks_at_the_prompt():
    confirming = DEMO.model_copy(update={"tiers": {**DEMO.tiers, "service": DEMO.tiers["service"].model_copy(update={"confirm": True})}})
    [line] = waiting.approve_lines("s", "--address a", record("service", ["alice"]), confirming, KEYS)
    assert line.endswith("--confirm - --address a")


async def test_the_listing_finds_this_stacks_waiting_incidents_started_since_and_no_others(client):
    queue, other = f"dev-{uuid.uuid4().hex[:8]}", f"dev-{uuid.uuid4().hex[:8]}"

    async def start(task_queue: str, status: str, workflow: str = INCIDENT_WORKFLOW) -> str:
        handle = await client.start_workflow(  # no worker: it stays running with the status it started with
            workflow, id=f"{task_queue}-{status}-{uuid.uuid4().hex[:6]}", task_queue=task_queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(search.STATUS, status)]))
        return handle.id

    before = await start(queue, "awaiting_approval")
    await asyncio.sleep(0.01)  # StartTime has millisecond resolution in visibility: strictly after
    since = datetime.now(timezone.utc)
    started = [before, *await asyncio.gather(start(queue, "awaiting_approval"), start(queue, "awaiting_approval", DRILL_WORKFLOW),
                                             start(queue, "diagnosing"), start(other, "awaiting_approval"))]
    mine = sorted(started[1:3])  # an incident and a drill: to the approver, a drill is any request

    async def listed(query: str, expect: int) -> list[str] | None:
        ids = sorted([wf.id async for wf in client.list_workflows(query)])
        return ids if len(ids) >= expect else None  # visibility is a moment behind the starts

    try:
        assert await wait_for(lambda: listed(waiting.query(queue, None), 3)) == sorted([before, *mine])
        assert await listed(waiting.query(queue, since), 0) == mine
    finally:
        for workflow_id in started:
            await client.get_workflow_handle(workflow_id).terminate("test done")
