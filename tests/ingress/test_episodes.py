"""One incident per alert episode, on real Temporal: re-deliveries never open another.

Every outcome an incident can end with is reached for real (a worker runs the incidents),
then the same alert is delivered again: Temporal refuses the start, the sender hears 202
``duplicate``, and no second incident exists. An alert that resolved and fires again has
a new start, so it is a new episode and a new incident.
"""

from __future__ import annotations

import hashlib

from datetime import datetime, timedelta, timezone

import httpx
import pytest
import pytest_asyncio

from selfheal.ingress.app import create_app
from selfheal.ingress.delivery import Delivery
from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.contract import IncidentSettings
from selfheal.settings import WorkerSettings
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import RULES, TOKEN, WHITELIST, settings
from tests.ingress.payloads import alertmanager, body, incident, incidents_for, key, prom_alert
from tests.workflows.helpers import FAST, ended, running_worker, wait_for, wait_status

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
# Short approval timers, so that "expired" is an outcome a test can reach.
TIMERS = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=1),
                             "escalate_after": timedelta(seconds=2), "expire_after": timedelta(seconds=4)})


@pytest_asyncio.fixture
async def short_worker(client, task_queue, tmp_path):
    (tmp_path / "wl.yaml").write_text(WHITELIST)
    (tmp_path / "rules.yaml").write_text(RULES)
    s = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                       diagnosis=str(tmp_path / "rules.yaml"), incident=TIMERS)
    async with running_worker(client, s):
        yield


def ingress(delivery: Delivery) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings(), delivery)), base_url="http://ingress.test")


async def post_am(http: httpx.AsyncClient, *alerts: dict) -> list[dict]:
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(*alerts)), headers=BEARER)
    assert response.status_code == 202, response.text
    return response.json()["incidents"]


async def drive(outcome: str, http, client, handle, alert: dict) -> None:
    """Bring the incident to ``outcome`` the way the world would."""
    if outcome == "no_remedy":
        return  # the alert matched no entry: it ends by itself
    await wait_status(handle, "awaiting_approval")
    if outcome == "rejected":
        await handle.execute_update(IncidentWorkflow.reject, Rejection(approver="alice", reason="not now"))
    elif outcome == "failed":  # approved, and this worker has no ecs.rollback executor
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
    elif outcome == "resolved_without_action":
        await post_am(http, {**alert, "status": "resolved", "endsAt": datetime.now(timezone.utc).isoformat()})
    # "expired": nobody answers


@pytest.mark.parametrize("outcome", ["no_remedy", "rejected", "failed", "resolved_without_action", "expired"])
async def test_a_redelivery_after_the_incident_ended_starts_nothing(outcome, client, task_queue, delivery, short_worker):
    fingerprint = "e" + hashlib.sha256(outcome.encode()).hexdigest()[:15]
    alertname = "Unmatched" if outcome == "no_remedy" else "IngressTest"
    alert = prom_alert(alertname=alertname, fingerprint=fingerprint)
    async with ingress(delivery) as http:
        [first] = await post_am(http, alert)
        assert first["state"] == "delivered" and first["id"] == incident(key(f"am-{fingerprint}", alertname))
        handle = client.get_workflow_handle(first["id"], result_type=AuditRecord)
        await drive(outcome, http, client, handle, alert)
        record = await ended(handle)
        assert record.outcome == outcome, record.outcome_detail

        for _ in range(3):  # Alertmanager's re-sends of the still-firing alert
            [again] = await post_am(http, alert)
            assert again["id"] == first["id"] and again["state"] in {"duplicate", "already delivered"}
        # A fresh ingress process remembers nothing: Temporal itself refuses the start.
        async with ingress(Delivery(client, task_queue)) as fresh:
            [again] = await post_am(fresh, alert)
            assert again == {**first, "state": "duplicate"}
    assert await incidents_for(client, key(f"am-{fingerprint}", alertname)) == [first["id"]]
    assert (await handle.describe()).run_id == (await client.get_workflow_handle(first["id"]).describe()).run_id


async def test_resolved_then_firing_again_is_a_new_episode_and_a_new_incident(client, delivery, short_worker):
    fingerprint = "e00000000000f1f0"
    alert = prom_alert(fingerprint=fingerprint)
    async with ingress(delivery) as http:
        [first] = await post_am(http, alert)
        handle = client.get_workflow_handle(first["id"], result_type=AuditRecord)
        await wait_status(handle, "awaiting_approval")
        await post_am(http, {**alert, "status": "resolved", "endsAt": datetime.now(timezone.utc).isoformat()})
        assert (await handle.result()).outcome == "resolved_without_action"

        later = datetime.now(timezone.utc).replace(microsecond=0)
        [second] = await post_am(http, {**alert, "startsAt": later.isoformat()})
    assert second["state"] == "delivered"
    assert second["id"] == incident(key(f"am-{fingerprint}"), later) != first["id"]
    both = sorted([first["id"], second["id"]])
    # Visibility is eventually consistent: the second start may take a moment to be listed.
    assert await wait_for(lambda: _listed(client, key(f"am-{fingerprint}"), both)) == both
    await wait_status(client.get_workflow_handle(second["id"]), "awaiting_approval")


async def test_a_storm_of_redeliveries_over_many_keys_opens_one_incident_per_key(client, delivery):
    import asyncio

    keys = [f"5707{i:012x}" for i in range(10)]
    async with ingress(delivery) as http:
        async def post(i: int):
            return await post_am(http, prom_alert(fingerprint=keys[i % len(keys)]))

        answers = await asyncio.gather(*(post(i) for i in range(300)))
    ids = {a["id"] for [a] in answers}
    assert ids == {incident(key(f"am-{k}")) for k in keys}
    assert {a["state"] for [a] in answers} <= {"delivered", "already delivered"}
    for k in keys:
        assert await incidents_for(client, key(f"am-{k}")) == [incident(key(f"am-{k}"))]
        history = await client.get_workflow_handle(incident(key(f"am-{k}"))).fetch_history()
        assert len(history.events) < 100  # re-sends this process already delivered cost nothing


@pytest.mark.slow  # a dev server of its own, with a lowered signal limit
async def test_resends_beyond_temporals_signal_limit_still_get_202(tmp_path):
    from tests.conftest import temporal_binary
    from tests.ingress.served import free_port
    from tests.support.devserver import DevServer

    with DevServer(temporal_binary(), tmp_path / "t.db", free_port(), {"history.maximumSignalsPerExecution": 50}) as server:
        client = await server.client()
        async with ingress(Delivery(client, "signal-limit")) as http:
            states = []
            for i in range(60):  # each differs (an annotation), so each is a real signal
                alert = {**prom_alert(fingerprint="5a7ed"), "annotations": {"n": str(i)}}
                [answer] = await post_am(http, alert)
                states.append(answer["state"])
            [resolved] = await post_am(http, {**prom_alert(fingerprint="5a7ed"), "status": "resolved"})
    assert states[:50] == ["delivered"] * 50
    assert states[50:] == ["saturated"] * 10
    assert resolved["state"] == "saturated"


async def _listed(client, key: str, expected: list[str]) -> list[str] | None:
    found = await incidents_for(client, key)
    return found if len(found) >= len(expected) else None
