"""``POST /v1/approvals``: a person proven by their token; the workflow checks the ingress's word.

Real app, real Temporal, a real worker. The ingress's attestation key is an Ed25519 key
made here; the whitelist lists its public half, and each person's token hashed.
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from temporalio.api.enums.v1 import EventType

from selfheal.identity.attest import public_line
from selfheal.ingress.app import create_app
from selfheal.ingress.approvals import Approver, token_hash
from selfheal.contract import AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import RULES, settings
from tests.workflows.helpers import FAST, alert, ended, running_worker, start_incident, wait_status

KEY = Ed25519PrivateKey.generate()
STRANGER_KEY = Ed25519PrivateKey.generate()
TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}


def whitelist(channels: str = "[ssh, slack, token]") -> str:
    people = "".join(f'  {p}: {{token_sha256: ["{token_hash(t)}"]}}\n' for p, t in TOKENS.items())
    return f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
tiers:
  instance: {{approvals: 0}}
  service: {{approvals: 1, channels: {channels}}}
  pair: {{approvals: 2}}
attestation_keys: ["{public_line(KEY, 'selfheal-ingress')}"]
people:
{people}entries:
  - id: rollback-ingress
    kind: ecs.rollback
    target: {{cluster: demo, service: ingress, task_definition: "ingress:1", region: eu-west-1, account: "123456789012"}}
    blast_radius: service
    approvers: {{people: [alice, carol]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    match: ['alertname="IngressTest"']
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
PAIR_RULES = RULES + """
  - id: pair-test
    summary: the pair test alert
    match: ['alertname="PairTest"']
    propose: rollback-pair
"""


@pytest_asyncio.fixture
async def setup(client, task_queue, tmp_path, request):
    channels = getattr(request, "param", "[ssh, slack, token]")
    (tmp_path / "wl.yaml").write_text(whitelist(channels))
    (tmp_path / "rules.yaml").write_text(PAIR_RULES)
    worker_settings = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                                     diagnosis=str(tmp_path / "rules.yaml"), incident=FAST)
    loaded = load_whitelist(tmp_path / "wl.yaml")
    async with running_worker(client, worker_settings):
        yield loaded


def ingress(client, delivery, whitelist, key=KEY) -> httpx.AsyncClient:
    app = create_app(settings(), delivery, approver=Approver(client, whitelist, key))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test")


def post(http, token: str | None, key: str | bytes | None = None, **body):
    headers = ({"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
               | ({"Idempotency-Key": key} if key is not None else {}))
    return http.post("/v1/approvals", content=json.dumps(body).encode(), headers=headers)


async def waiting_incident(client, task_queue, alertname: str = "IngressTest"):
    handle = await start_incident(client, task_queue, alert(alertname))
    await wait_status(handle, "awaiting_approval")
    return handle


async def messages(handle) -> list[str]:
    """The signals and updates an incident's history holds (its own timers and tasks may go on meanwhile)."""
    return [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events
            if e.event_type in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
                                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
                                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
                                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED)]


async def refusals(http) -> dict[str, float]:
    """``selfheal_ingress_refusals_total{channel="token"}`` by reason, from the ingress's /metrics."""
    text = (await http.get("/metrics")).text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "selfheal_ingress_refusals_total" and s.labels["channel"] == "token" and s.value}


async def test_a_token_approval_counts_as_verified_and_strangers_are_refused(client, task_queue, delivery, setup):
    handle = await waiting_incident(client, task_queue)
    async with ingress(client, delivery, setup.whitelist) as http:
        unknown = await post(http, "guess", incident=handle.id, action="approve")
        missing = await post(http, None, incident=handle.id, action="approve")
        not_allowed = await post(http, TOKENS["bob"], incident=handle.id, action="approve")
        nothing = await post(http, TOKENS["alice"], incident="no-such-incident", action="approve")
        ok = await post(http, TOKENS["alice"], incident=handle.id, action="approve", comment="canary is red")
        late = await post(http, TOKENS["alice"], incident=handle.id, action="approve")
    record: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    assert unknown.status_code == 401 and missing.status_code == 401
    assert not_allowed.status_code == 403 and "'bob' may not approve rollback-ingress" in not_allowed.json()["error"]
    assert nothing.status_code == 404
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"result": "approved by alice (1 of 1)", "person": "alice"}
    assert late.status_code in (403, 409)  # it no longer waits: nothing more counts
    assert [(e.kind, e.approver, e.channel, e.verified) for e in record.approvals] == [
        ("refused", "bob", "token", True), ("approved", "alice", "token", True)]
    assert record.approvals[-1].note == "canary is red"


@pytest.mark.parametrize("setup", ["[ssh, slack]"], indirect=True)
async def test_a_tier_that_does_not_count_tokens_refuses_them(client, task_queue, delivery, setup):
    handle = await waiting_incident(client, task_queue)
    async with ingress(client, delivery, setup.whitelist) as http:
        answer = await post(http, TOKENS["alice"], incident=handle.id, action="approve")
    assert answer.status_code == 403 and "channel 'token' does not count for the service tier" in answer.json()["error"]
    assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"


async def test_an_attestation_by_a_key_the_whitelist_does_not_list_is_refused(client, task_queue, delivery, setup):
    handle = await waiting_incident(client, task_queue)
    async with ingress(client, delivery, setup.whitelist, key=STRANGER_KEY) as http:  # a forged ingress
        answer = await post(http, TOKENS["alice"], incident=handle.id, action="reject", reason="no")
    assert answer.status_code == 403 and "attestation not signed by a key the whitelist lists" in answer.json()["error"]
    record = await handle.query(IncidentWorkflow.audit)
    assert record.status == "awaiting_approval" and record.approvals[-1].kind == "refused"


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=200) | st.dictionaries(st.sampled_from(["incident", "action", "comment", "confirm", "x"]),
                                                        st.none() | st.integers() | st.text(max_size=30), max_size=5)
       .map(lambda d: json.dumps(d).encode()),
       token=st.sampled_from([None, "", "guess", TOKENS["alice"]]))
async def test_no_approval_post_gets_a_5xx(client, delivery, body, token):
    whitelist_ = load_whitelist_text(whitelist())
    async with ingress(client, delivery, whitelist_) as http:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token is not None else {})
        answer = await http.post("/v1/approvals", content=body, headers=headers)
    assert answer.status_code < 500, answer.text  # Temporal is up: nothing here is a 503
    assert "error" in answer.json() or answer.status_code == 200


def load_whitelist_text(text: str):
    from selfheal.whitelist import load_whitelist_bytes

    return load_whitelist_bytes(text.encode()).whitelist


async def test_a_token_naming_nobody_is_a_401_logged_and_counted_and_reaches_no_workflow(
        client, task_queue, delivery, setup, caplog):
    handle = await waiting_incident(client, task_queue)
    caplog.set_level(logging.WARNING, logger="selfheal.ingress")
    async with ingress(client, delivery, setup.whitelist) as http:
        unknown = await post(http, "guess-token-xyz", incident=handle.id, action="approve")
        missing = await post(http, None, incident=handle.id, action="approve")
        basic = await http.post("/v1/approvals", content=b"{}", headers={"Authorization": f"Basic {TOKENS['alice']}"})
        counted = await refusals(http)
    assert [unknown.status_code, missing.status_code, basic.status_code] == [401, 401, 401]
    assert counted == {"unknown_token": 1, "no_token": 2}
    assert await messages(handle) == []  # no signal, no update: nothing reached the incident
    record = await handle.query(IncidentWorkflow.audit)
    assert record.approvals == [] and record.status == "awaiting_approval"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in logged if "token approval refused" in m]) == 3, logged
    assert not any("guess-token-xyz" in m or TOKENS["alice"] in m for m in logged)


async def test_a_token_request_retried_with_the_same_idempotency_key_counts_once_and_gets_its_answer_again(
        client, task_queue, delivery, setup):
    handle = await waiting_incident(client, task_queue, "PairTest")  # two approvals: a retry could count
    async with ingress(client, delivery, setup.whitelist) as http, ingress(client, delivery, setup.whitelist) as other:
        first = await post(http, TOKENS["alice"], key="4f1c-retry-1", incident=handle.id, action="approve")
        retried = await post(other, TOKENS["alice"], key="4f1c-retry-1", incident=handle.id, action="approve")
        turned = await post(other, TOKENS["alice"], key="4f1c-retry-1", incident=handle.id, action="reject", reason="x")
        bad = [await post(http, TOKENS["alice"], key=k, incident=handle.id, action="approve")
               for k in ("", "has space", "x" * 129, "ünï".encode("latin-1"))]
        counted = await refusals(http)
        counted_other = await refusals(other)
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"  # one of two approvals
        bob = await post(http, TOKENS["bob"], key="4f1c-retry-1", incident=handle.id, action="approve")  # keys are per person
        record: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
        after_close = await post(other, TOKENS["alice"], key="4f1c-retry-1", incident=handle.id, action="approve")
    assert first.status_code == 200 and first.json()["result"] == "approved by alice (1 of 2)"
    assert retried.status_code == 200, retried.text
    assert retried.json()["result"].startswith("approved by alice at ")
    assert retried.json()["result"].endswith("(this Idempotency-Key, counted once)")
    assert turned.status_code == 422 and "counted for the approval of" in turned.json()["error"]
    assert [b.status_code for b in bad] == [400] * 4 and "Idempotency-Key" in bad[0].json()["error"]
    assert counted == {"malformed_key": 4} and counted_other == {"key_reused": 1}
    assert bob.status_code == 200 and bob.json()["result"] == "approved by bob (2 of 2)"
    assert after_close.status_code == 200 and after_close.json() == retried.json()  # the incident moved on: same answer
    assert [(e.kind, e.approver, e.channel, e.verified, e.origin) for e in record.approvals] == [
        ("approved", "alice", "token", True, "token:alice:4f1c-retry-1"),
        ("approved", "bob", "token", True, "token:bob:4f1c-retry-1")]


async def test_a_retry_racing_its_first_try_is_refused_by_the_workflow_and_answered_like_the_first(
        client, task_queue, delivery, setup):
    """Two ingresses each read the incident before either try counted: the workflow counts
    one, refuses the other as a replay (recorded), and both people-facing answers are 200."""
    handle = await waiting_incident(client, task_queue, "PairTest")
    stale = await handle.query(IncidentWorkflow.audit)  # what the second ingress read, before the first try counted

    class Racing(Approver):
        reads = 0

        async def record(self, incident_id: str) -> AuditRecord:
            self.reads += 1
            return stale if self.reads == 1 else await super().record(incident_id)

    racing = Racing(client, setup.whitelist, KEY)
    async with ingress(client, delivery, setup.whitelist) as http:
        first = await post(http, TOKENS["alice"], key="race-1", incident=handle.id, action="approve")
    second = await racing.send("alice", "token", handle.id, "approve", origin="token:alice:race-1")
    record = await handle.query(IncidentWorkflow.audit)
    assert first.status_code == 200 and first.json()["result"] == "approved by alice (1 of 2)"
    assert second.startswith("approved by alice at ") and racing.reads == 2
    assert [(e.kind, e.approver) for e in record.approvals] == [("approved", "alice"), ("refused", "alice")]
    assert "replayed: this token request (the same Idempotency-Key) was already used" in record.approvals[1].note
    assert record.status == "awaiting_approval"  # counted once: still one of two
