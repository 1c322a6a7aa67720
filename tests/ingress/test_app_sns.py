"""CloudWatch alarms through SNS, end to end through the app: signed in, incident out."""

import json
import re

import httpx
import pytest_asyncio

from selfheal.ingress.app import create_app
from selfheal.ingress.delivery import Delivery
from tests.ingress.conftest import settings
from tests.ingress.test_sns import (  # noqa: F401  (fixtures)
    NOW, TOPIC, Loopback, alarm_body, confirmation, loopback, loopback_server, loopback_verifier, notification,
    signer, sign, sns_http, stranger,
)


@pytest_asyncio.fixture
async def sns_app(client, task_queue, sns_http, loopback):
    delivery = Delivery(client, task_queue)
    app = create_app(settings(), delivery, loopback_verifier(sns_http, loopback), now=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        yield http, delivery


def post(http, message: dict):
    # SNS posts its JSON with Content-Type text/plain.
    return http.post("/v1/alerts/sns", content=json.dumps(message).encode(), headers={"Content-Type": "text/plain; charset=UTF-8"})


async def test_signed_alarm_starts_an_incident(sns_app, client, loopback, signer):
    http, delivery = sns_app
    response = await post(http, sign(notification(), signer.key, loopback.url("/cert.pem"), "2"))
    assert response.status_code == 202, response.text
    [incident] = response.json()["incidents"]
    assert re.fullmatch(r"api-5xx\.sns-[0-9a-f]{16}~[0-9a-f]{12}", incident["id"])  # named by the alarm
    description = await client.get_workflow_handle(incident["id"]).describe()
    assert description.workflow_type == "IncidentWorkflow"
    assert delivery.calls == 1


async def test_forged_or_tampered_alarm_is_refused_and_starts_nothing(sns_app, loopback, signer, stranger):
    http, delivery = sns_app
    forged = await post(http, sign(notification(), stranger.key, loopback.url("/cert.pem")))
    assert forged.status_code == 401 and "signature" in forged.json()["error"]
    tampered = sign(notification(), signer.key, loopback.url("/cert.pem"))
    tampered["Message"] = json.dumps(alarm_body(AlarmName="something-else"))
    assert (await post(http, tampered)).status_code == 401
    assert delivery.calls == 0


async def test_subscription_confirmation_is_verified_then_confirmed(sns_app, loopback, signer):
    http, delivery = sns_app
    url = loopback.url(f"/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok-9")
    response = await post(http, sign(confirmation(url, token="tok-9"), signer.key, loopback.url("/cert.pem")))
    assert response.status_code == 200 and response.json() == {"subscribed": TOPIC}
    assert "/confirm" in loopback.paths()
    assert delivery.calls == 0
