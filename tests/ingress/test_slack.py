"""Slack, end to end: the request message, signed clicks, the confirm modal, the update after.

A local server speaks Slack's Web API (tests/support/slack.py); everything else is real:
the app, Temporal, the worker, and interaction posts signed the way Slack signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from selfheal.identity.attest import public_line
from selfheal.ingress.app import create_app
from selfheal.ingress.approvals import Approver
from selfheal.ingress.slack import MAX_FORWARDED_REFUSALS, SlackInteractions
from selfheal.contract import Approval, AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.slack import SlackApi
from selfheal.whitelist import load_whitelist
from selfheal.workflows.approval_desk import MAX_REFUSALS_PER_IDENTITY
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import settings
from tests.support.slack import FakeSlack
from tests.workflows.helpers import FAST, alert, ended, running_worker, start_incident, wait_for, wait_status

SECRET = "slack-signing-secret"
KEY = Ed25519PrivateKey.generate()
USERS = {"alice": "UALICE", "bob": "UBOB"}

WHITELIST = f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
tiers:
  instance: {{approvals: 0}}
  service: {{approvals: 1}}
  careful: {{approvals: 1, confirm: true}}
  pair: {{approvals: 2}}
attestation_keys: ["{public_line(KEY)}"]
people:
  alice: {{slack: ["T1:UALICE"]}}
  bob: {{slack: ["T1:UBOB"]}}
entries:
  - id: rollback-ingress
    kind: ecs.rollback
    target: {{cluster: demo, service: ingress, task_definition: "ingress:1", region: eu-west-1, account: "123456789012"}}
    blast_radius: service
    approvers: {{people: [alice, carol]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    match: ['alertname="IngressTest"']
    verify: {{timeout: 1m}}
  - id: rollback-careful
    kind: ecs.rollback
    target: {{cluster: demo, service: careful, task_definition: "careful:7", region: eu-west-1, account: "123456789012"}}
    blast_radius: careful
    approvers: {{people: [alice, carol]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    match: ['alertname="CarefulTest"']
    verify: {{timeout: 1m}}
  - id: rollback-pair
    kind: ecs.rollback
    target: {{cluster: demo, service: pair, task_definition: "pair:3", region: eu-west-1, account: "123456789012"}}
    blast_radius: pair
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    match: ['alertname="PairTest"']
    verify: {{timeout: 1m}}
"""
RULES = """
signatures:
  - {id: ingress, summary: the ingress test alert, match: ['alertname="IngressTest"'], propose: rollback-ingress}
  - {id: careful, summary: the careful test alert, match: ['alertname="CarefulTest"'], propose: rollback-careful}
  - {id: pair, summary: the pair test alert, match: ['alertname="PairTest"'], propose: rollback-pair}
"""


@pytest.fixture
def slack():
    with FakeSlack() as fake:
        yield fake


@pytest_asyncio.fixture
async def stack(client, task_queue, tmp_path, delivery, slack):
    (tmp_path / "wl.yaml").write_text(WHITELIST)
    (tmp_path / "rules.yaml").write_text(RULES)
    worker = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"), diagnosis=str(tmp_path / "rules.yaml"),
                            incident=FAST, slack_token=slack.token, slack_channel="C-ONCALL", slack_api_url=slack.api_url)
    async with running_worker(client, worker), ingress(client, delivery, tmp_path, slack) as (http, interactions):
        yield http, interactions


@asynccontextmanager
async def ingress(client, delivery, tmp_path, slack):
    """One ingress app: its own whitelist copy, Slack verifier, replay memory and metrics; Temporal is shared."""
    approver = Approver(client, load_whitelist(tmp_path / "wl.yaml").whitelist, KEY)
    interactions = SlackInteractions(SECRET, approver, SlackApi(slack.token, slack.api_url))
    app = create_app(settings(), delivery, approver=approver, slack=interactions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        yield http, interactions


async def refusals(http, channel: str = "slack") -> dict[str, float]:
    """``selfheal_ingress_refusals_total`` by reason, as this ingress's /metrics shows it."""
    text = (await http.get("/metrics")).text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "selfheal_ingress_refusals_total" and s.labels["channel"] == channel and s.value}


def signed(payload: dict, secret: str = SECRET, age: int = 0) -> tuple[bytes, dict]:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) - age)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
                  "Content-Type": "application/x-www-form-urlencoded"}


def click(action: str, incident: str, user: str, response: str, trigger: str = "trig-1", team: str = "T1",
          name: str = "display-name-lies") -> dict:
    return {"type": "block_actions", "team": {"id": team}, "user": {"id": user, "team_id": team, "name": name},
            "trigger_id": trigger, "response_url": response, "actions": [{"action_id": action, "value": incident}]}


async def post(http, interactions, payload: dict | tuple[bytes, dict], **kw) -> httpx.Response:
    body, headers = payload if isinstance(payload, tuple) else signed(payload, **kw)
    answer = await http.post("/v1/slack/interactions", content=body, headers=headers)
    await interactions.drain()
    return answer


async def waiting(client, task_queue, alertname: str, slack: FakeSlack | None = None):
    handle = await start_incident(client, task_queue, alert(alertname))
    await wait_status(handle, "awaiting_approval")
    if slack is not None:  # the status is set before the request is posted

        async def posted():
            return slack.called("chat.postMessage")
        await wait_for(posted)
    return handle


async def test_the_request_message_and_every_kind_of_click(client, task_queue, stack, slack):
    http, interactions = stack
    handle = await waiting(client, task_queue, "IngressTest", slack)
    [message] = slack.called("chat.postMessage")
    assert message["channel"] == "C-ONCALL"
    text = json.dumps(message["blocks"])
    for shown in ("Approval needed: rollback-ingress", "ingress:1", "service (1 approval(s))", "alice, carol", "Evidence"):
        assert shown in text, shown
    assert [e["action_id"] for e in message["blocks"][-1]["elements"]] == ["approve", "reject", "evidence"]

    bob = signed(click("approve", handle.id, USERS["bob"], slack.response_url("bob")))
    assert (await post(http, interactions, bob)).status_code == 200
    assert "Not counted (bob): 'bob' may not approve rollback-ingress" in slack.called("/response/bob")[-1]["text"]
    replay = await post(http, interactions, bob)  # the very same signed request again
    forged = await post(http, interactions, click("approve", handle.id, USERS["alice"], slack.response_url("f")), secret="guess")
    stale = await post(http, interactions, click("approve", handle.id, USERS["alice"], slack.response_url("s")), age=600)
    stranger = await post(http, interactions, click("approve", handle.id, "UNOBODY", slack.response_url("stranger")))
    assert [replay.status_code, forged.status_code, stale.status_code] == [401, 401, 401]
    assert "replayed" in replay.json()["error"]
    assert stranger.status_code == 200 and "not mapped to a person" in slack.called("/response/stranger")[-1]["text"]
    assert not slack.called("/response/f") and not slack.called("/response/s")

    await post(http, interactions, click("evidence", handle.id, USERS["alice"], slack.response_url("evidence")))
    assert "Evidence for" in slack.called("/response/evidence")[-1]["text"]
    await post(http, interactions, click("approve", handle.id, USERS["alice"], slack.response_url("alice")))
    decided = slack.called("/response/alice")[-1]
    assert decided["replace_original"] is True and "Approved by alice in Slack" in decided["text"]
    record: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    assert [(e.kind, e.approver, e.channel, e.verified) for e in record.approvals] == [
        ("refused", "bob", "slack", True), ("refused", "slack:T1:UNOBODY", "slack", False),
        ("approved", "alice", "slack", True)]
    assert record.approvals[-1].evidence_viewed is True
    assert [(v.person, v.channel, v.verified) for v in record.evidence_views] == [("alice", "slack", True)]

    async def updated():  # the outcome updates the request message
        return slack.called("chat.update")

    [update] = await wait_for(updated, timeout=30)
    assert (update["channel"], update["ts"]) == ("C-ONCALL", slack.posted[0])
    assert record.outcome in json.dumps(update["blocks"])


async def test_a_tier_that_asks_confirmation_opens_a_modal_where_the_target_is_typed(client, task_queue, stack, slack):
    http, interactions = stack
    handle = await waiting(client, task_queue, "CarefulTest")
    await post(http, interactions, click("approve", handle.id, USERS["alice"], slack.response_url("careful"), trigger="t-9"))
    [opened] = slack.called("views.open")
    assert opened["trigger_id"] == "t-9" and opened["view"]["callback_id"] == "selfheal_confirm"

    def submission(typed: str) -> dict:
        return {"type": "view_submission", "team": {"id": "T1"}, "user": {"id": USERS["alice"], "team_id": "T1"},
                "view": {"callback_id": "selfheal_confirm", "private_metadata": opened["view"]["private_metadata"],
                         "state": {"values": {"confirm": {"target": {"type": "plain_text_input", "value": typed}}}}}}

    await post(http, interactions, submission("careful:8"))
    assert "confirmation 'careful:8' is not 'careful:7'" in slack.called("/response/careful")[-1]["text"]
    assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"
    await post(http, interactions, submission("careful:7"))
    assert "Approved by alice in Slack" in slack.called("/response/careful")[-1]["text"]
    record: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    assert [(e.kind, e.channel) for e in record.approvals] == [("refused", "slack"), ("approved", "slack")]


async def test_unsigned_or_malformed_interaction_posts_are_refused_without_a_5xx(stack):
    http, _ = stack
    for headers, body in [
        ({}, b"payload=%7B%7D"),
        ({"X-Slack-Request-Timestamp": "\xb2".encode("latin-1"), "X-Slack-Signature": b"v0=00"}, b"payload=%7B%7D"),
        ({"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=00"}, b"\xff\xfe"),
    ]:
        answer = await http.post("/v1/slack/interactions", content=body, headers=headers)
        assert answer.status_code in (400, 401), answer.text


async def test_an_unmapped_user_or_foreign_workspace_is_recorded_as_refused_logged_counted_and_never_counts(
        client, task_queue, stack, slack, caplog):
    http, interactions = stack
    handle = await waiting(client, task_queue, "IngressTest", slack)
    caplog.set_level(logging.WARNING, logger="selfheal.ingress")
    # A stranger who calls themselves alice; alice's own user id, in another workspace.
    await post(http, interactions, click("approve", handle.id, "UNOBODY9", slack.response_url("nobody"), name="alice"))
    await post(http, interactions, click("reject", handle.id, USERS["alice"], slack.response_url("evil"), team="TEVIL1",
                                         name="alice\nalice"))
    await post(http, interactions, click("evidence", handle.id, "UNOBODY9", slack.response_url("peek"), trigger="t-2"))
    record = await handle.query(IncidentWorkflow.audit)
    assert record.status == "awaiting_approval"  # neither the approval nor the rejection counted
    assert [(e.kind, e.approver, e.channel, e.verified, e.via) for e in record.approvals] == [
        ("refused", "slack:T1:UNOBODY9", "slack", False, "signal"),
        ("refused", "slack:TEVIL1:UALICE", "slack", False, "signal")]
    assert record.approvals[0].note == ("approval refused: unmapped Slack user T1:UNOBODY9 (display name 'alice'): no person "
                                        "in the whitelist has this Slack id (people.<name>.slack), so it never counts")
    assert "rejection refused: unmapped Slack user TEVIL1:UALICE (display name 'alicealice')" in record.approvals[1].note
    assert "Evidence for" not in slack.called("/response/peek")[-1]["text"]  # nothing shown, nothing recorded
    assert not record.evidence_views
    for name in ("nobody", "evil"):
        assert "not mapped to a person" in slack.called(f"/response/{name}")[-1]["text"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("T1:UNOBODY9 ('alice')" in m and "recorded on the incident" in m for m in logged), logged
    assert any("TEVIL1:UALICE" in m for m in logged), logged
    assert not any(SECRET in m for m in logged)
    assert await refusals(http) == {"unmapped_user": 3}

    # The person herself still counts: the refusals under her name from elsewhere took nothing from her.
    await post(http, interactions, click("approve", handle.id, USERS["alice"], slack.response_url("alice"), trigger="t-3"))
    final: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    assert [(e.kind, e.approver) for e in final.approvals if e.kind in ("approved", "rejected")] == [("approved", "alice")]


async def test_clicks_from_one_unmapped_user_are_capped_per_ingress_and_per_incident(
        client, task_queue, delivery, tmp_path, stack, slack):
    http, interactions = stack
    handle = await waiting(client, task_queue, "IngressTest", slack)
    flood = 2 * MAX_FORWARDED_REFUSALS + 2

    async def clicks(http_, interactions_, first: int, n: int) -> None:
        for i in range(first, first + n):
            await post(http_, interactions_, click("approve", handle.id, "UFLOOD", slack.response_url(f"f{i}"), trigger=f"t{i}"))

    await clicks(http, interactions, 0, flood)
    record = await handle.query(IncidentWorkflow.audit)
    assert len(record.approvals) == MAX_FORWARDED_REFUSALS  # the rest were logged and counted here, not sent
    assert await refusals(http) == {"unmapped_user": flood}
    async with ingress(client, delivery, tmp_path, slack) as (http2, interactions2):
        await clicks(http2, interactions2, flood, flood)  # another ingress forwards its own few
        assert await refusals(http2) == {"unmapped_user": flood}
    # Past the workflow's cap per name, the audit only counts (anyone with Temporal access can signal).
    for _ in range(3):
        await handle.signal(IncidentWorkflow.approve_signal, Approval(approver="slack:T1:UFLOOD", channel="slack"))
    record = await handle.query(IncidentWorkflow.audit)
    kept = [e for e in record.approvals if e.approver == "slack:T1:UFLOOD"]
    assert len(kept) == MAX_REFUSALS_PER_IDENTITY == 2 * MAX_FORWARDED_REFUSALS
    assert record.refusals_not_recorded == 3
    assert {e.kind for e in record.approvals} == {"refused"} and record.status == "awaiting_approval"


async def test_a_signed_click_replayed_to_a_second_ingress_counts_once_and_is_recorded_as_a_replay(
        client, task_queue, delivery, tmp_path, stack, slack):
    http, interactions = stack
    handle = await waiting(client, task_queue, "PairTest", slack)  # two approvals: it still waits after one
    request = signed(click("approve", handle.id, USERS["alice"], slack.response_url("alice")))
    assert (await post(http, interactions, request)).status_code == 200
    assert "approved by alice (1 of 2)" in slack.called("/response/alice")[-1]["text"]
    async with ingress(client, delivery, tmp_path, slack) as (http2, interactions2):  # shares only Temporal
        assert (await post(http2, interactions2, request)).status_code == 200  # new to this ingress's memory
        assert await refusals(http2) == {"replayed": 1}
    assert ("Not counted (alice): signature refused: replayed: this Slack action was already used"
            in slack.called("/response/alice")[-1]["text"])
    assert (await post(http, interactions, request)).status_code == 401  # the first ingress remembers it itself
    record = await handle.query(IncidentWorkflow.audit)
    assert record.status == "awaiting_approval"
    assert [(e.kind, e.approver, e.channel, e.verified) for e in record.approvals] == [
        ("approved", "alice", "slack", True), ("refused", "alice", "slack", False)]
    assert "replayed: this Slack action was already used" in record.approvals[1].note

    await post(http, interactions, click("approve", handle.id, USERS["bob"], slack.response_url("bob")))
    final: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    assert [(e.kind, e.approver) for e in final.approvals if e.kind == "approved"] == [("approved", "alice"), ("approved", "bob")]
