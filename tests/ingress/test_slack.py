"""Slack, end to end: the request message, signed clicks, the confirm modal, the update after.

A local server speaks Slack's Web API (tests/support/slack.py); everything else is real:
the app, Temporal, the worker, and interaction posts signed the way Slack signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from selfheal.attest import public_line
from selfheal.ingress.app import create_app
from selfheal.ingress.approvals import Approver
from selfheal.ingress.slack import SlackInteractions
from selfheal.models import AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.slack import SlackApi
from selfheal.whitelist import load_whitelist
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import settings
from tests.support.slack import FakeSlack
from tests.workflows.helpers import FAST, alert, running_worker, start_incident, wait_for, wait_status

SECRET = "slack-signing-secret"
KEY = Ed25519PrivateKey.generate()
USERS = {"alice": "UALICE", "bob": "UBOB"}

WHITELIST = f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
tiers:
  instance: {{approvals: 0}}
  service: {{approvals: 1}}
  careful: {{approvals: 1, confirm: true}}
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
"""
RULES = """
signatures:
  - {id: ingress, summary: the ingress test alert, match: ['alertname="IngressTest"'], propose: rollback-ingress}
  - {id: careful, summary: the careful test alert, match: ['alertname="CarefulTest"'], propose: rollback-careful}
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
    approver = Approver(client, load_whitelist(tmp_path / "wl.yaml").whitelist, KEY)
    interactions = SlackInteractions(SECRET, approver, SlackApi(slack.token, slack.api_url))
    app = create_app(settings(), delivery, approver=approver, slack=interactions)
    async with running_worker(client, worker), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                 base_url="http://ingress.test") as http:
        yield http, interactions


def signed(payload: dict, secret: str = SECRET, age: int = 0) -> tuple[bytes, dict]:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) - age)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
                  "Content-Type": "application/x-www-form-urlencoded"}


def click(action: str, incident: str, user: str, response: str, trigger: str = "trig-1") -> dict:
    return {"type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "team_id": "T1", "name": "display-name-lies"},
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
    record: AuditRecord = await client.get_workflow_handle(handle.id, result_type=AuditRecord).result()
    assert [(e.kind, e.approver, e.channel, e.verified) for e in record.approvals] == [
        ("refused", "bob", "slack", True), ("approved", "alice", "slack", True)]
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
    record: AuditRecord = await client.get_workflow_handle(handle.id, result_type=AuditRecord).result()
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
