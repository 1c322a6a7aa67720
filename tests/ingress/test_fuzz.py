"""Property-based fuzzing of every ingress endpoint, with Temporal up.

Any body, headers and content type: never a 5xx (a 503 would claim Temporal did not take
the alerts, and it is up), and a refused request never reaches Temporal, so it can never
start an incident. Bodies are drawn from four families, each reaching deeper into the
code: random bytes, random JSON, valid payloads with fields replaced by random JSON, and
valid payloads with random text in their labels; credentials are absent, wrong or right.
"""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st

from tests.ingress.conftest import SECRET, TOKEN
from tests.ingress.payloads import alertmanager, grafana, prom_alert, sign
from tests.ingress.test_sns import loopback, loopback_server, signer, sns_http, stranger  # noqa: F401  (fixtures)

ENDPOINTS = ["/v1/alerts/alertmanager", "/v1/alerts/grafana", "/v1/alerts/generic", "/v1/alerts/sns"]

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                          max_leaves=30)
label_text = st.text(max_size=60)  # any code point but lone surrogates, which no JSON encoder emits raw


def valid_payload(path: str, alert: dict) -> dict:
    if path.endswith("alertmanager"):
        return alertmanager(alert)
    if path.endswith("grafana"):
        return grafana(alert)
    if path.endswith("generic"):
        return {"alerts": [{"labels": alert["labels"], "annotations": alert["annotations"], "fingerprint": alert["fingerprint"],
                            "starts_at": alert["startsAt"]}]}
    return {"Type": "Notification", "Message": json.dumps(alert), "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Timestamp": "2026-11-25T12:00:00Z", "SignatureVersion": "1", "Signature": "AA==",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"}


@st.composite
def bodies(draw, path: str) -> bytes:
    family = draw(st.sampled_from(["bytes", "json", "replaced", "labels"]))
    if family == "bytes":
        return draw(st.binary(max_size=300))
    if family == "json":
        return json.dumps(draw(json_value)).encode()
    alert = prom_alert(fingerprint=draw(st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True)))
    if family == "labels":
        alert["labels"] = {"alertname": "IngressTest", **draw(st.dictionaries(label_text, label_text, max_size=5))}
        alert["annotations"] = draw(st.dictionaries(label_text, label_text, max_size=3))
        return json.dumps(valid_payload(path, alert), ensure_ascii=draw(st.booleans())).encode()
    payload = valid_payload(path, alert)
    target = payload["alerts"][0] if "alerts" in payload and draw(st.booleans()) else payload
    for key in draw(st.lists(st.sampled_from(sorted(target)), max_size=3)):
        target[key] = draw(json_value)
    return json.dumps(payload).encode()


@st.composite
def requests(draw):
    path = draw(st.sampled_from(ENDPOINTS))
    data = draw(bodies(path))
    # Weighted towards what passes the outer checks, so most examples reach the parsers
    # and Temporal; the rest probe the checks themselves.
    usual = "text/plain" if path.endswith("sns") else "application/json"
    content_type = draw(st.sampled_from([usual] * 6 + ["application/json; charset=utf-8", "text/plain", "", None]))
    if content_type is None:
        content_type = draw(st.text(max_size=20).map(lambda t: t.encode("latin-1", "replace").decode("latin-1")))
    headers = {"Content-Type": content_type}
    credentials = draw(st.sampled_from(["right"] * 6 + ["none", "wrong"]))
    if credentials != "none":
        token = TOKEN if credentials == "right" else draw(st.text(max_size=20))
        headers["Authorization"] = f"Bearer {token}"
        secret = SECRET if credentials == "right" else "wrong"
        headers["X-Selfheal-Signature"] = f"sha256={sign(secret, data)}"
        if draw(st.booleans()):
            stamp = draw(st.sampled_from([str(int(time.time()))] * 4 + ["²", "", "-1", "1e3"]))
            headers["X-Grafana-Alerting-Signature-Timestamp"] = stamp
            headers["X-Grafana-Alerting-Signature"] = sign(secret, f"{stamp}:".encode() + data)
        else:
            headers["X-Grafana-Alerting-Signature"] = sign(secret, data)
    encoded = {k: v.encode("latin-1", "replace") for k, v in headers.items()}
    return path, encoded, data


@hsettings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
async def test_no_request_gets_a_5xx_and_a_refused_one_never_reaches_temporal(http, client, delivery, request):
    path, headers, data = request
    calls = delivery.calls
    response = await http.post(path, content=data, headers=headers)
    event(f"{path.rsplit('/', 1)[1]} answered {response.status_code}")  # --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.text)
    assert "error" in response.json() if response.status_code >= 400 else True
    if response.status_code >= 400:
        assert delivery.calls == calls, response.text
    elif response.status_code == 202:  # and then Temporal really has each incident it names
        for incident in response.json()["incidents"]:
            if incident["state"] in ("delivered", "already delivered"):
                assert (await client.get_workflow_handle(incident["id"]).describe()).workflow_type == "IncidentWorkflow"



@st.composite
def alarm_messages(draw) -> dict:
    """CloudWatch alarm bodies with fields replaced by random JSON: past the signature check."""
    from tests.ingress.test_sns import alarm_body

    alarm = alarm_body(NewStateValue=draw(st.sampled_from(["ALARM", "OK", "INSUFFICIENT_DATA"])),
                       AlarmName=draw(st.text(min_size=1, max_size=30)))
    for key in draw(st.lists(st.sampled_from(sorted(alarm)), max_size=3)):
        alarm[key] = draw(json_value)
    if draw(st.booleans()):
        return {"Message": json.dumps(alarm)}
    return {"Message": draw(st.text(max_size=80) | json_value.map(json.dumps))}


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=alarm_messages())
async def test_signed_sns_messages_with_any_content_never_get_a_5xx(client, task_queue, sns_http, loopback, signer, fields):
    import httpx

    from selfheal.ingress.app import create_app
    from selfheal.ingress.delivery import Delivery
    from tests.ingress.conftest import settings
    from tests.ingress.test_sns import NOW, loopback_verifier, notification, sign as sns_sign

    delivery = Delivery(client, task_queue)
    app = create_app(settings(), delivery, loopback_verifier(sns_http, loopback), now=lambda: NOW)
    message = sns_sign(notification(**fields), signer.key, loopback.url("/cert.pem"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        response = await http.post("/v1/alerts/sns", content=json.dumps(message).encode(), headers={"Content-Type": "text/plain"})
    event(f"signed sns answered {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code != 202:
        assert delivery.calls == 0


# Every POST route and the test that sends it arbitrary input and asserts no 5xx while Temporal is up.
FUZZED_ELSEWHERE = {
    "/v1/approvals": "tests/ingress/test_approvals_endpoint.py::test_no_approval_post_gets_a_5xx",
    "/v1/slack/interactions": "tests/ingress/test_slack.py::test_unsigned_or_malformed_interaction_posts_are_refused_without_a_5xx",
}


def test_every_post_route_of_the_ingress_is_fuzzed():
    """A route added later must join a fuzz test: it fails here until it does."""
    from fastapi.routing import APIRoute

    from selfheal.ingress.app import create_app
    from tests.ingress.conftest import settings

    app = create_app(settings(), delivery=None)
    posted = {r.path for r in app.routes if isinstance(r, APIRoute) and "POST" in r.methods}
    assert posted == set(ENDPOINTS) | set(FUZZED_ELSEWHERE)
