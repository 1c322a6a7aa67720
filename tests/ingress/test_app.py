"""The ingress against real Temporal: what starts an incident, and what never does."""

import asyncio
import json
import time

import pytest
from temporalio.service import RPCError

from selfheal.contract import AuditRecord
from tests.ingress.conftest import SECRET, TOKEN
from tests.ingress.payloads import alertmanager, body, generic, grafana, incident as incident_of, key, prom_alert, sign
from tests.workflows.helpers import wait_status
from selfheal.workflows.incident import IncidentWorkflow

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def generic_headers(data: bytes, token: str = TOKEN, secret: str = SECRET) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-Selfheal-Signature": f"sha256={sign(secret, data)}"}


async def audit(client, incident_id) -> AuditRecord:
    return await client.get_workflow_handle(incident_id).query(IncidentWorkflow.audit)


async def test_alertmanager_alert_starts_one_incident_and_repeats_and_resolution_signal_it(http, client, worker):
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager()), headers=BEARER)
    assert response.status_code == 202, response.text
    [incident] = response.json()["incidents"]
    assert incident["id"] == incident_of(key("am-a1b2c3d4e5f60718")) and incident["state"] == "delivered"
    assert incident["url"] == f"http://ui.test/namespaces/default/workflows/{incident['id']}"
    handle = client.get_workflow_handle(incident["id"], result_type=AuditRecord)
    await wait_status(handle, "awaiting_approval")
    first_run = (await handle.describe()).run_id

    again = await http.post("/v1/alerts/alertmanager", content=body(alertmanager()), headers=BEARER)
    assert again.status_code == 202 and again.json()["incidents"][0]["id"] == incident["id"]
    assert (await handle.describe()).run_id == first_run  # the same workflow, not a second
    record = await audit(client, incident["id"])
    assert len(record.alerts) == 1 and record.alerts[0].source == "alertmanager"
    assert record.alerts[0].labels["alertname"] == "IngressTest"

    resolved = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(prom_alert(status="resolved"), status="resolved")), headers=BEARER)
    assert resolved.status_code == 202
    record = await handle.result()
    assert record.outcome == "resolved_without_action"
    assert [a.status for a in record.alerts] == ["firing", "resolved"]


async def test_resolved_alert_without_an_open_incident_starts_nothing(http, client, delivery):
    response = await http.post(
        "/v1/alerts/alertmanager", content=body(alertmanager(prom_alert(status="resolved", fingerprint="0000000000000fff"))), headers=BEARER
    )
    assert response.status_code == 202
    assert response.json()["incidents"][0]["state"] == "no open incident"
    assert response.json()["incidents"][0]["url"] is None  # no link to an incident that does not exist
    with pytest.raises(RPCError):
        await client.get_workflow_handle(incident_of(key("am-0000000000000fff"))).describe()


async def test_an_incident_is_listed_with_its_service_and_first_stage_from_its_start(http, client, delivery):
    """No worker runs: what the list shows comes from the start alone, written by the ingress
    in the visibility record every start writes (the incident does not write it again)."""
    from selfheal import search

    assert await search.available(client, "default", create=True)
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(prom_alert(fingerprint="00000000000a11ce"))),
                               headers=BEARER)
    assert response.status_code == 202, response.text
    [incident] = response.json()["incidents"]
    shown = (await client.get_workflow_handle(incident["id"]).describe()).typed_search_attributes
    assert (shown.get(search.SERVICE), shown.get(search.STATUS)) == ("ingress", search.FIRST_STATUS), shown


def grafana_headers(data: bytes, timestamp: int) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Grafana-Alerting-Signature": sign(SECRET, f"{timestamp}:".encode() + data),
        "X-Grafana-Alerting-Signature-Timestamp": str(timestamp),
    }


async def test_grafana_with_hmac_and_timestamp_starts_an_incident(http, client, worker):
    data = body(grafana(prom_alert(fingerprint="9f9f9f9f9f9f9f9f")))
    headers = grafana_headers(data, int(time.time()))
    response = await http.post("/v1/alerts/grafana", content=data, headers=headers)
    assert response.status_code == 202, response.text
    incident_id = incident_of(key("grafana-9f9f9f9f9f9f9f9f"))
    assert response.json()["incidents"][0]["id"] == incident_id
    await wait_status(client.get_workflow_handle(incident_id), "awaiting_approval")
    assert (await audit(client, incident_id)).alerts[0].source == "grafana"


async def test_grafana_signature_with_a_stale_timestamp_is_a_replay(http, delivery):
    data = body(grafana())
    response = await http.post("/v1/alerts/grafana", content=data, headers=grafana_headers(data, int(time.time()) - 3600))
    assert response.status_code == 401 and "more than 300s from now" in response.json()["error"]
    assert delivery.calls == 0


async def test_generic_needs_both_token_and_signature_and_keys_by_labels(http, client, worker):
    data = body(generic(service="ingress", instance="web-1"))
    response = await http.post("/v1/alerts/generic", content=data, headers=generic_headers(data))
    assert response.status_code == 202, response.text
    incident_id = response.json()["incidents"][0]["id"]
    assert incident_id.startswith("ingress.IngressTest.generic-")  # a person reads it
    same = await http.post("/v1/alerts/generic", content=data, headers=generic_headers(data))
    assert same.json()["incidents"][0]["id"] == incident_id  # same labels, same incident
    await wait_status(client.get_workflow_handle(incident_id), "awaiting_approval")


GOOD_AM = body(alertmanager())
GOOD_GENERIC = body(generic())


@pytest.mark.parametrize(
    "path, headers, data, status, reason",
    [
        ("/v1/alerts/alertmanager", {"Content-Type": "application/json"}, GOOD_AM, 401, "bearer token"),
        ("/v1/alerts/alertmanager", {**BEARER, "Authorization": "Bearer nope"}, GOOD_AM, 401, "bearer token"),
        ("/v1/alerts/alertmanager", {**BEARER, "Authorization": f"Basic {TOKEN}"}, GOOD_AM, 401, "bearer token"),
        ("/v1/alerts/alertmanager", BEARER, b"{not json", 400, "not JSON"),
        ("/v1/alerts/alertmanager", {**BEARER, "Content-Type": "text/html"}, GOOD_AM, 415, "application/json"),
        ("/v1/alerts/alertmanager", BEARER, body({**alertmanager(), "version": "3"}), 422, "version"),
        ("/v1/alerts/alertmanager", BEARER, body({**alertmanager(), "alerts": []}), 422, "alerts"),
        ("/v1/alerts/alertmanager", BEARER, body(alertmanager({**prom_alert(), "fingerprint": ""})), 422, "alerts.0.fingerprint"),
        ("/v1/alerts/alertmanager", BEARER, body(alertmanager({**prom_alert(), "startsAt": "yesterday"})), 422, "alerts.0.startsAt"),
        ("/v1/alerts/alertmanager", BEARER, body(alertmanager({**prom_alert(), "labels": {}})), 422, "alerts.0.labels"),
        ("/v1/alerts/grafana", {"Content-Type": "application/json"}, body(grafana()), 401, "HMAC"),
        ("/v1/alerts/grafana", {"Content-Type": "application/json", "X-Grafana-Alerting-Signature": "00"}, body(grafana()), 401, "HMAC"),
        ("/v1/alerts/generic", {**BEARER, "X-Selfheal-Signature": "sha256=" + sign("wrong", GOOD_GENERIC)}, GOOD_GENERIC, 401, "HMAC"),
        ("/v1/alerts/generic", {"Content-Type": "application/json", "X-Selfheal-Signature": "sha256=" + sign(SECRET, GOOD_GENERIC)}, GOOD_GENERIC, 401, "bearer"),
        ("/v1/alerts/generic", None, body({"alerts": [{"labels": {"service": "x"}}]}), 422, "alertname"),
        ("/v1/alerts/generic", None, body({"alerts": [{"labels": {"alertname": "X"}, "severity": "high"}]}), 422, "alerts.0.severity"),
        ("/v1/alerts/generic", None, body({"alerts": [{"labels": {"alertname": "X"}, "status": "maybe"}]}), 422, "alerts.0.status"),
        ("/v1/alerts/generic", None, body([]), 422, "body"),
        ("/v1/alerts/sns", {"Content-Type": "text/plain"}, body({"Type": "Notification"}), 401, "SNS is not configured"),
    ],
)
async def test_bad_requests_get_the_reason_and_start_nothing(http, delivery, path, headers, data, status, reason):
    if headers is None:  # a correctly signed generic request whose content is wrong
        headers = generic_headers(data)
    response = await http.post(path, content=data, headers=headers)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert delivery.calls == 0


async def test_oversized_bodies_are_refused_with_or_without_a_length(http, delivery):
    big = body(alertmanager(prom_alert(note="x" * 70_000)))
    response = await http.post("/v1/alerts/alertmanager", content=big, headers=BEARER)
    assert response.status_code == 413 and "65536-byte limit" in response.json()["error"]

    async def chunks():
        for _ in range(20):
            yield b"x" * 4096

    streamed = await http.post("/v1/alerts/alertmanager", content=chunks(), headers=BEARER)
    assert streamed.status_code == 413
    assert delivery.calls == 0


async def test_a_storm_for_one_key_is_coalesced_into_few_temporal_calls(http, client, delivery, worker):
    async def post(i: int):
        payload = {"alerts": [{"labels": {"alertname": "IngressTest"}, "annotations": {"n": str(i)}, "fingerprint": "storm"}]}
        data = body(payload)
        return await http.post("/v1/alerts/generic", content=data, headers=generic_headers(data))

    responses = await asyncio.gather(*(post(i) for i in range(40)))
    assert {r.status_code for r in responses} == {202}
    [incident_id] = {r.json()["incidents"][0]["id"] for r in responses}
    assert incident_id.startswith(key("generic-storm", service=None) + "~")
    assert delivery.calls < 10  # 40 alerts, a handful of signal-with-starts
    record = await audit(client, incident_id)
    assert sorted(int(a.annotations["n"]) for a in record.alerts) == list(range(40))  # none lost


async def test_openapi_document_lists_every_endpoint(http):
    spec = (await http.get("/openapi.json")).json()
    assert {"/v1/alerts/alertmanager", "/v1/alerts/grafana", "/v1/alerts/sns", "/v1/alerts/generic", "/healthz"} <= set(spec["paths"])
    schema = spec["paths"]["/v1/alerts/alertmanager"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "groupKey" in json.dumps(schema)
    assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_the_ui_shows_what_fired_as_written_never_as_markdown_the_sender_chose(http, client, worker):
    hostile = "```\n[approve here](http://evil.example/approve) ![x](http://evil.example/pixel.png)\n````"
    payload = {"alerts": [{"labels": {"alertname": "IngressTest", "service": "checkout"},
                           "annotations": {"summary": "checkout 5xx", "description": hostile}}]}
    data = body(payload)
    response = await http.post("/v1/alerts/generic", content=data, headers=generic_headers(data))
    assert response.status_code == 202, response.text
    described = await client.get_workflow_handle(response.json()["incidents"][0]["id"]).describe()
    details, summary = await described.static_details(), await described.static_summary()
    assert summary == "IngressTest on checkout — checkout 5xx"
    assert details.startswith("**What fired** (as the sender reported it):\n\n```text\n") and details.endswith("\n```\n")
    inside = details[len("**What fired** (as the sender reported it):\n\n```text\n"):-len("\n```\n")]
    assert "```" not in inside  # no fence the sender wrote can close the block early
    assert "service=checkout" in inside and "[approve here](http://evil.example/approve)" in inside  # shown as text
