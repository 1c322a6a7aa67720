"""A page's life follows the incident's (issue 25): real incidents on the dev server, a real
worker, the AWS simulation, and a loopback server that speaks PagerDuty's Events API v2.
Each test counts the events of one incident: one PagerDuty alert per incident, opened when
people are needed, acknowledged by a verified answer, resolved when it ends well."""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import timedelta

import pytest

from selfheal.contract import AuditRecord, IncidentSettings, Rejection
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.keys import keypair, people_yaml
from tests.support.pagerduty import FakePagerDuty
from tests.workflows.helpers import FAST, TYPED_NAMES_COUNT, alert, drill_of, ended, running_worker, start_incident, wait_for, wait_status
from tests.workflows.test_incident_aws import RULES, settings
from tests.workflows.test_incident_aws import WHITELIST as WHITELIST_AWS
from tests.workflows.test_metrics_prometheus import selfheal_process
from tests.workflows.test_worker_process import stop
from tests.workflows.test_drills import PAYMENTS
from tests.workflows.test_signed_approvals import signed

pytestmark = pytest.mark.slow

KEY, UPPER = "SERVICEKEY0000000000000000000000", "MANAGERSKEY00000000000000000000"


def paged(fake: FakePagerDuty, incident_id: str):
    async def probe():
        return fake.of(incident_id) or None
    return probe


def whitelist(people: str, shadow: bool = False, drills: str = "") -> str:
    """test_incident_aws's whitelist, whose service tier pages the managers at the escalation
    time, with the approvers' keys (a verified answer acknowledges the page)."""
    text = WHITELIST_AWS.replace(TYPED_NAMES_COUNT, TIERS).replace(
        "entries:\n", f"{people}{drills}entries:\n{PAYMENTS if drills else ''}", 1)
    return text.replace(AUTONOMY, AUTONOMY + "    mode: shadow\n", 1) if shadow else text


TIERS = """tiers:
  instance: {approvals: 0}
  service: {approvals: 1, paging: {escalate_to_env: PD_MANAGERS}}
  fleet: {approvals: 2}
  region: {approvals: 2}
"""
AUTONOMY = "    autonomy: {max_targets: 5}\n"  # scale-queue-workers': shadowed on demand


@pytest.fixture
def keys(tmp_path):
    return {name: keypair(tmp_path, name) for name in ("alice", "bob")}


@pytest.fixture
def pagerduty(monkeypatch):
    monkeypatch.setenv("PD_MANAGERS", UPPER)  # the whitelist names the variable; the worker holds the key
    with FakePagerDuty(KEY, UPPER) as fake:
        yield fake


def paging(tmp_path, task_queue, fake, keys, incident: IncidentSettings = FAST, **kw):
    people = people_yaml({p: public for p, (_, public) in keys.items()})
    base = settings(tmp_path, task_queue, whitelist=whitelist(people, **kw), rules=RULES)
    return base.model_copy(update={"pagerduty_routing_key": KEY, "pagerduty_url": fake.url, "incident": incident,
                                   "ui_url": "http://ui.test"})


async def test_an_approved_request_is_paged_acknowledged_and_resolved_once(client, task_queue, tmp_path, aws_world,
                                                                            pagerduty, keys):
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        await wait_status(handle, "awaiting_approval")
        await wait_for(paged(pagerduty, handle.id))  # the page is out while it waits
        record = await handle.query(IncidentWorkflow.audit)
        await handle.execute_update(IncidentWorkflow.approve, signed(record, keys["alice"][0]))
        record: AuditRecord = await ended(handle)
    assert record.outcome == "remediated", record.outcome_detail
    assert pagerduty.of(handle.id) == [("trigger", KEY), ("acknowledge", KEY), ("resolve", KEY)]
    trigger = pagerduty.events[0]
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["source"] == "checkout"
    assert "rollback-checkout" in trigger["payload"]["summary"] and "alice, bob" in trigger["payload"]["summary"]
    assert trigger["links"][0]["href"].endswith(f"/workflows/{handle.id}")
    pages = [n for n in record.notifications if n.channel == "pagerduty"]
    assert [n.delivered for n in pages] == [True, True, True]


async def test_a_rejected_request_is_acknowledged_and_resolved(client, task_queue, tmp_path, aws_world, pagerduty, keys):
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        await wait_status(handle, "awaiting_approval")
        record = await handle.query(IncidentWorkflow.audit)
        proof = signed(record, keys["bob"][0], person="bob", action="reject")
        await handle.execute_update(IncidentWorkflow.reject, Rejection(
            approver="bob", reason="no", channel=proof.channel, statement=proof.statement, signature=proof.signature))
        record = await ended(handle)
    assert record.outcome == "rejected"
    assert pagerduty.of(handle.id) == [("trigger", KEY), ("acknowledge", KEY), ("resolve", KEY)]


async def test_an_unanswered_request_pages_the_next_level_then_expires_and_stays_open(
        client, task_queue, tmp_path, aws_world, pagerduty, keys):
    quick = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=1),
                                "escalate_after": timedelta(seconds=2), "expire_after": timedelta(seconds=3)})
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys, quick), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        record = await ended(handle)
    assert record.outcome == "expired"
    # The reminder pages no one; the escalation time pages the managers; nobody resolves it.
    assert pagerduty.of(handle.id) == [("trigger", KEY), ("trigger", UPPER)]
    assert pagerduty.alerts == {(KEY, handle.id): "triggered", (UPPER, handle.id): "triggered"}


async def test_an_automatic_incident_that_healed_pages_no_one(client, task_queue, tmp_path, aws_world, pagerduty, keys):
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("QueueBacklogHigh"))
        record = await ended(handle)
    assert record.outcome == "remediated" and record.decision.kind == "auto"
    assert pagerduty.events == [] and pagerduty.refused == []


async def test_a_shadow_entry_never_pages(client, task_queue, tmp_path, aws_world, pagerduty, keys):
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys, shadow=True), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("QueueBacklogHigh"))
        record = await ended(handle)
    assert record.outcome == "shadowed"
    assert pagerduty.events == []


async def test_a_drill_pages_like_the_request_it_imitates(client, task_queue, tmp_path, aws_world, pagerduty, keys):
    drills = "drills: {rate: 1}\n"
    async with running_worker(client, paging(tmp_path, task_queue, pagerduty, keys, drills=drills),
                              aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        await wait_status(handle, "awaiting_approval")
        drill = client.get_workflow_handle(await drill_of(handle), result_type=AuditRecord)
        await wait_for(paged(pagerduty, drill.id))
        await drill.terminate("the test is done with it")
        await handle.terminate("the test is done with it")
    assert pagerduty.of(drill.id) == [("trigger", KEY)] and pagerduty.of(handle.id) == [("trigger", KEY)]
    [request] = [e for e in pagerduty.events if e["dedup_key"] == drill.id]
    # It looks exactly like a real request (the drill's wrong proposal is what it asks about).
    assert request["payload"]["severity"] == "error" and "rollback-payments" in request["payload"]["summary"]


async def test_a_400_is_recorded_counted_and_never_blocks_the_incident(client, task_queue, tmp_path, aws_world, keys):
    with FakePagerDuty("some-other-key") as wrong:
        async with running_worker(client, paging(tmp_path, task_queue, wrong, keys), aws=aws_world.clients()):
            handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
            await wait_status(handle, "awaiting_approval")
            record = await handle.query(IncidentWorkflow.audit)
            await handle.execute_update(IncidentWorkflow.approve, signed(record, keys["alice"][0]))
            record = await ended(handle)
    assert record.outcome == "remediated"
    paged = [n for n in record.notifications if n.channel == "pagerduty"]
    assert [n.kind for n in paged] == ["approval_requested", "answered", "outcome"]
    assert not any(n.delivered for n in paged) and all("Invalid routing key" in n.detail for n in paged)
    assert len(wrong.refused) == len(paged)  # each refused once: a 400 is never retried


async def test_a_worker_killed_while_paging_opens_no_second_alert(temporal_env, task_queue, tmp_path):
    """PagerDuty took the trigger; the worker died before it heard the 202. The activity runs
    again on another worker and sends the same event: the same dedup_key, the same alert."""
    client = temporal_env.client
    log = tmp_path / "workers.log"
    (tmp_path / "wl.yaml").write_text(WHITELIST_AWS)
    (tmp_path / "rules.yaml").write_text(RULES)
    with FakePagerDuty(KEY) as fake:
        env = {"TEMPORAL_ADDRESS": client.service_client.config.target_host, "SELFHEAL_TASK_QUEUE": task_queue,
               "SELFHEAL_WHITELIST": str(tmp_path / "wl.yaml"), "SELFHEAL_DIAGNOSIS": str(tmp_path / "rules.yaml"),
               "SELFHEAL_PAGERDUTY_ROUTING_KEY": KEY, "SELFHEAL_PAGERDUTY_URL": fake.url}
        fake.hold = release = threading.Event()
        first, second = selfheal_process(["worker"], env, log), None
        try:
            handle = await start_incident(client, task_queue, alert("NothingMatchesThis"))  # no remedy: people are paged

            async def held():
                return fake.held or None

            await wait_for(held, timeout=60)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            release.set()  # too late: nobody is listening for this 202
            second = selfheal_process(["worker"], env, log)
            record: AuditRecord = await asyncio.wait_for(ended(handle), 90)
        finally:
            release.set()
            codes = [stop(first)] + ([stop(second)] if second is not None else [])
    assert record.outcome == "no_remedy", log.read_text()[-3000:]
    assert codes[1:] == [0], log.read_text()[-3000:]
    assert fake.of(handle.id) == [("trigger", KEY), ("trigger", KEY)]  # sent again, after the kill
    assert fake.alerts == {(KEY, handle.id): "triggered"}  # one PagerDuty alert
    [page] = [n for n in record.notifications if n.channel == "pagerduty"]
    assert page.delivered and page.kind == "escalation"


async def test_a_page_links_to_the_slack_request_it_goes_out_with(client, task_queue, tmp_path, aws_world, pagerduty, keys):
    from tests.support.slack import FakeSlack

    with FakeSlack() as slack:
        both = paging(tmp_path, task_queue, pagerduty, keys).model_copy(update={
            "slack_token": slack.token, "slack_channel": "C1", "slack_api_url": slack.api_url})
        async with running_worker(client, both, aws=aws_world.clients()):
            handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
            await wait_status(handle, "awaiting_approval")
            await wait_for(paged(pagerduty, handle.id))
            await handle.terminate("the test is done with it")
    [posted] = slack.posted
    [trigger] = [e for e in pagerduty.events if e["dedup_key"] == handle.id]
    assert {"href": f"https://fake.slack.test/archives/C1/p{posted.replace('.', '')}",
            "text": "the approval request in Slack"} in trigger["links"]
