"""The episode rule per source, and where a message that cannot name its episode goes.

Pure tests of the parsers first (same start, same episode; a new start, a new one), then
the messages without an episode against real Temporal: they reach the key's running
incident even through an ingress process that has never seen it (a visibility query), and
start nothing when only a resolution arrives with nothing open.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import pytest_asyncio

from selfheal.ingress import parsers
from selfheal.ingress.app import create_app
from selfheal.ingress.delivery import Delivery, incident_id
from selfheal.ingress.cloudwatch import parse_cloudwatch_alarm
from tests.ingress.conftest import SECRET, TOKEN, settings
from tests.ingress.payloads import alertmanager, body, grafana, incidents_for, prom_alert, sign
from tests.ingress.test_sns import (  # noqa: F401  (fixtures)
    NOW, alarm_body, loopback, loopback_server, loopback_verifier, notification, sign as sns_sign, signer, sns_http,
    stranger,
)

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)


def am(starts: datetime, status: str = "firing", fingerprint: str = "f00d") -> parsers.AlertmanagerPayload:
    alert = {**prom_alert(fingerprint=fingerprint, status=status), "startsAt": starts.isoformat()}
    return parsers.AlertmanagerPayload.model_validate(alertmanager(alert, status=status))


def sns(state: str, changed: str) -> list[parsers.Routed]:
    message = notification(Message=json.dumps(alarm_body(NewStateValue=state, StateChangeTime=changed)))
    return parsers.from_sns_alarm(parse_cloudwatch_alarm(message))


# --- the rule per source (pure) ---------------------------------------------------------

def test_alertmanager_episode_is_fingerprint_and_starts_at_in_any_time_zone():
    [a] = parsers.from_alertmanager(am(T0))
    [resend] = parsers.from_alertmanager(am(T0.astimezone(timezone(timedelta(hours=2)))))
    [resolved] = parsers.from_alertmanager(am(T0, status="resolved"))
    [later] = parsers.from_alertmanager(am(T0 + timedelta(minutes=5)))
    [other] = parsers.from_alertmanager(am(T0, fingerprint="beef"))
    assert a.key == "ingress.IngressTest.am-f00d" and a.episode == resend.episode == resolved.episode
    assert later.key == a.key and later.episode != a.episode
    assert other.key != a.key


def test_a_key_begins_with_the_service_and_alert_name_made_safe_and_bounded():
    assert parsers.named({"alertname": "Disk full / 90%", "service": "pay ments"}, "am-1") == "pay-ments.Disk-full-90.am-1"
    assert parsers.named({"alertname": "X" * 500, "job": "node"}, "am-1") == f"node.{'X' * parsers.NAME_PART}.am-1"
    assert parsers.named({"alertname": "ÄÖÜ"}, "generic-h1") == "generic-h1"  # nothing safe is left: the key alone
    group = parsers.group_labels('{}/{severity="page"}:{alertname="ApiDown", service="api"}')
    assert group == {"alertname": "ApiDown", "service": "api"}  # the route's matchers are not the group's labels


def test_alertmanager_group_key_names_no_episode():
    [a] = parsers.from_alertmanager(am(T0), key_by="group")
    assert a.key.startswith("IngressTest.am-group-") and a.episode is None  # named by the group key's labels


def test_grafana_episode_is_fingerprint_and_starts_at():
    def routed(starts):
        payload = grafana({**prom_alert(fingerprint="9a"), "startsAt": starts.isoformat()})
        return parsers.from_grafana(parsers.GrafanaPayload.model_validate(payload))[0]

    assert routed(T0).key == "ingress.IngressTest.grafana-9a"
    assert routed(T0).episode == routed(T0).episode != routed(T0 + timedelta(seconds=1)).episode


def test_sns_episode_is_the_alarm_and_the_state_change_time_of_its_alarm():
    [alarm] = sns("ALARM", "2026-11-25T11:59:57.456+0000")
    [again] = sns("ALARM", "2026-11-25T11:59:57.456+0000")
    [next_alarm] = sns("ALARM", "2026-11-25T13:00:00.000+0000")
    [ok] = sns("OK", "2026-11-25T12:10:00.000+0000")
    assert alarm.key == again.key == next_alarm.key == ok.key
    assert alarm.episode == again.episode != next_alarm.episode
    assert ok.episode is None and ok.alert.status == "resolved"


def test_generic_episode_is_fingerprint_and_starts_at_and_none_without_it():
    def routed(**fields):
        alert = {"labels": {"alertname": "X"}, "fingerprint": "fp", **fields}
        return parsers.from_generic(parsers.GenericPayload.model_validate({"alerts": [alert]}), now=T0)[0]

    assert routed(starts_at=T0.isoformat()).episode == routed(starts_at=T0.isoformat()).episode
    assert routed(starts_at=T0.isoformat()).episode != routed(starts_at=(T0 + timedelta(hours=1)).isoformat()).episode
    assert routed().episode is None and routed().alert.starts_at == T0


@pytest.mark.parametrize("fingerprint", ['a"b', "a b", "x" * 65, "ä", "a~b"])
def test_keys_hold_only_safe_characters_and_odd_fingerprints_never_collide(fingerprint):
    key = parsers.safe(fingerprint)
    assert parsers._KEY_SAFE.fullmatch(key)
    assert key != parsers.safe(fingerprint + "2")


# --- messages without an episode, on real Temporal ---------------------------------------

def generic_post(http: httpx.AsyncClient, alert: dict):
    data = body({"alerts": [alert]})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
               "X-Selfheal-Signature": f"sha256={sign(SECRET, data)}"}
    return http.post("/v1/alerts/generic", content=data, headers=headers)


def fresh_ingress(client, task_queue, **overrides) -> httpx.AsyncClient:
    """An ingress process that has delivered nothing yet: it can only ask Temporal."""
    app = create_app(settings(**overrides), Delivery(client, task_queue))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test")


async def alerts_signals(client, wid: str) -> int:
    history = await client.get_workflow_handle(wid).fetch_history()
    return sum(1 for e in history.events
               if e.HasField("workflow_execution_signaled_event_attributes")
               and e.workflow_execution_signaled_event_attributes.signal_name == "alerts")


async def test_generic_alert_without_starts_at_goes_to_the_running_incident(client, task_queue):
    alert = {"labels": {"alertname": "IngressTest"}, "fingerprint": "no-start"}
    async with fresh_ingress(client, task_queue) as first:
        opened = (await generic_post(first, alert)).json()["incidents"][0]
    assert opened["state"] == "delivered" and opened["id"].startswith("IngressTest.generic-no-start~")
    async with fresh_ingress(client, task_queue) as second:
        response = await generic_post(second, {**alert, "annotations": {"again": "yes"}})
        resolved = await generic_post(second, {**alert, "status": "resolved"})
    assert response.status_code == 202 and response.json()["incidents"][0] == opened
    assert resolved.json()["incidents"][0] == opened
    assert await incidents_for(client, "IngressTest.generic-no-start") == [opened["id"]]
    assert await alerts_signals(client, opened["id"]) == 3  # the start's, the second alert's, the resolution's


async def test_resolution_without_an_episode_and_nothing_open_starts_nothing(client, task_queue):
    async with fresh_ingress(client, task_queue) as http:
        response = await generic_post(http, {"labels": {"alertname": "IngressTest"}, "fingerprint": "never-open", "status": "resolved"})
    assert response.json()["incidents"][0]["state"] == "no open incident"
    assert await incidents_for(client, "IngressTest.generic-never-open") == []


async def test_alertmanager_group_goes_to_the_groups_running_incident(client, task_queue):
    async with fresh_ingress(client, task_queue, alertmanager_key="group") as first:
        response = await first.post("/v1/alerts/alertmanager", content=body(alertmanager(prom_alert(fingerprint="0001"))),
                                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        opened = response.json()["incidents"][0]
    async with fresh_ingress(client, task_queue, alertmanager_key="group") as second:
        later = {**prom_alert(fingerprint="0002"), "startsAt": datetime.now(timezone.utc).isoformat()}
        response = await second.post("/v1/alerts/alertmanager", content=body(alertmanager(later)),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert response.json()["incidents"][0] == opened
    key = opened["id"].split("~")[0]
    assert await incidents_for(client, key) == [opened["id"]]


@pytest_asyncio.fixture
async def sns_ingress(client, task_queue, sns_http, loopback):
    def make():
        app = create_app(settings(), Delivery(client, task_queue), loopback_verifier(sns_http, loopback), now=lambda: NOW)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test")

    return make


def sns_post(http, message):
    return http.post("/v1/alerts/sns", content=json.dumps(message).encode(), headers={"Content-Type": "text/plain"})


async def test_sns_ok_goes_to_the_alarms_running_incident_and_a_resent_alarm_to_the_same_one(client, sns_ingress, loopback, signer):
    changed = "2026-11-25T11:50:00.000+0000"
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:episode-test"

    def message(state, when, message_id):
        msg = notification(MessageId=message_id,
                           Message=json.dumps(alarm_body(NewStateValue=state, StateChangeTime=when, AlarmArn=arn)))
        return sns_sign(msg, signer.key, loopback.url("/cert.pem"))

    async with sns_ingress() as first:
        opened = (await sns_post(first, message("ALARM", changed, "m1"))).json()["incidents"][0]
    async with sns_ingress() as second:
        resent = (await sns_post(second, message("ALARM", changed, "m2"))).json()["incidents"][0]
        ok = (await sns_post(second, message("OK", "2026-11-25T11:58:00.000+0000", "m3"))).json()["incidents"][0]
    assert resent["id"] == ok["id"] == opened["id"]
    assert ok["state"] == "delivered"
    key = opened["id"].split("~")[0]
    assert opened["id"] == incident_id(key, parsers.episode_of(datetime.fromisoformat(changed)))
    assert await incidents_for(client, key) == [opened["id"]]
