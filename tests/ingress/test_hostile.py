"""Each hostile input class found in trials, as its own test: a 4xx with the reason, or a
202 that Temporal really took, and never a 5xx or a message that fails forever.

The classes: depth (nested JSON), encoding (lone surrogates, invalid UTF-8, a byte order
mark), type (digits that ``str.isdigit`` admits and ``int`` refuses), and size (values
larger than a Temporal search attribute holds, too many labels, long annotations).
"""

from __future__ import annotations

import json

import pytest

from selfheal import search
from selfheal.ingress.parsers import MAX_ANNOTATION_VALUE, MAX_PAIRS, TRUNCATED
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.conftest import SECRET, TOKEN
from tests.ingress.payloads import alertmanager, body, grafana, prom_alert, sign
from tests.ingress.test_sns import TIMESTAMP  # noqa: F401
from tests.workflows.helpers import wait_status

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ENDPOINTS = ["/v1/alerts/alertmanager", "/v1/alerts/grafana", "/v1/alerts/generic", "/v1/alerts/sns"]


def nested(depth: int) -> bytes:
    """Objects, then arrays: 10,000 levels still fit the test's 64 KiB body limit."""
    objects = min(depth, 1000)
    arrays = depth - objects
    return b'{"a":' * objects + b"[" * arrays + b"1" + b"]" * arrays + b"}" * objects


def _header_bytes(value: str) -> bytes:
    # HTTP headers are bytes; the server reads them as latin-1, so "²" arrives as itself
    # and other text as the latin-1 reading of its UTF-8.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def signed_generic(data: bytes) -> dict:
    return {**BEARER, "X-Selfheal-Signature": f"sha256={sign(SECRET, data)}"}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("depth", [33, 1_000, 10_000])
async def test_deeply_nested_json_is_a_400_on_every_endpoint_with_or_without_credentials(http, delivery, path, depth):
    data = nested(depth)
    for headers in ({"Content-Type": "text/plain"}, BEARER, signed_generic(data)):
        response = await http.post(path, content=data, headers=headers)
        assert response.status_code in (400, 401), response.text  # 401 where credentials are checked first
        if response.status_code == 400:
            assert "nests more than 32 levels" in response.json()["error"] or "depth" in response.json()["error"]
    assert delivery.calls == 0


async def test_nesting_within_the_limit_is_decoded_and_judged_on_its_fields(http, delivery):
    data = body({"alerts": [{"labels": {"alertname": "X"}, "annotations": {"deep": "x"}, "fingerprint": "n"}], "x": json.loads(nested(20))})
    response = await http.post("/v1/alerts/generic", content=data, headers=signed_generic(data))
    assert response.status_code == 422 and "x" in response.json()["error"]  # an unknown field, not a decoding failure


@pytest.mark.parametrize("raw", [
    b'{"alerts": [{"labels": {"alertname": "\\ud800"}}]}',          # a lone high surrogate, escaped
    b'{"alerts": [{"labels": {"alertname": "\\udc00x"}}]}',         # a lone low surrogate
    '{"alerts": [{"labels": {"alertname": "\udc80"}}]}'.encode("utf-8", "surrogatepass"),  # encoded raw
    b'{"alerts": [{"labels": {"alertname": "\xff\xfe"}}]}',         # not UTF-8 at all
    b'\xef\xbb\xbf{"alerts": []}',                                  # a byte order mark
])
async def test_undecodable_text_is_a_400_and_never_reaches_a_signature_or_temporal(http, delivery, raw):
    response = await http.post("/v1/alerts/generic", content=raw, headers=signed_generic(raw))
    assert response.status_code == 400, response.text
    assert "not JSON" in response.json()["error"]
    assert delivery.calls == 0


async def test_sns_message_with_lone_surrogates_in_signed_fields_is_a_400(http, delivery):
    message = {"Type": "Notification", "MessageId": "\\ud800", "TopicArn": "arn:aws:sns:us-east-1:1:t",
               "Message": "\\udfff", "Timestamp": TIMESTAMP, "SignatureVersion": "1", "Signature": "AA==",
               "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"}
    raw = json.dumps(message).replace("\\\\u", "\\u").encode()
    response = await http.post("/v1/alerts/sns", content=raw, headers={"Content-Type": "text/plain"})
    assert response.status_code == 400 and "surrogate" in response.json()["error"]


@pytest.mark.parametrize("timestamp", ["²", "١٧٠٠٠٠٠٠٠٠", "1e9", "-5", "9" * 40, " ", "0x10"])
async def test_grafana_timestamps_that_are_not_ascii_unix_seconds_are_a_401(http, delivery, timestamp):
    data = body(grafana())
    raw = _header_bytes(timestamp)
    headers = {"Content-Type": "application/json", "X-Grafana-Alerting-Signature-Timestamp": raw,
               "X-Grafana-Alerting-Signature": sign(SECRET, raw.decode("latin-1").encode() + b":" + data)}
    response = await http.post("/v1/alerts/grafana", content=data, headers=headers)
    assert response.status_code == 401 and "Unix seconds" in response.json()["error"]
    assert delivery.calls == 0


@pytest.mark.parametrize("length", ["²", "١٢", "-1", "1" * 30])
async def test_a_content_length_that_is_not_ascii_digits_is_never_a_500(http, delivery, length):
    data = body(alertmanager())
    response = await http.post("/v1/alerts/alertmanager", content=data, headers={**BEARER, "Content-Length": _header_bytes(length)})
    assert response.status_code < 500


@pytest.mark.parametrize("service", ["s" * 4000, "é" * 2000, "😀" * 1000])
async def test_a_service_label_longer_than_a_search_attribute_still_starts_its_incident(http, client, delivery, worker, service):
    alert = prom_alert(fingerprint=f"10{len(service):014d}", service=service)
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(alert)), headers=BEARER)
    assert response.status_code == 202, response.text  # never a 503 the sender would retry forever
    [incident] = response.json()["incidents"]
    handle = client.get_workflow_handle(incident["id"])
    await wait_status(handle, "awaiting_approval")  # the workflow's own upserts fit too
    description = await handle.describe()
    shown = description.typed_search_attributes.get(search.SERVICE)
    assert shown and service.startswith(shown) and len(json.dumps(shown)) <= search.MAX_VALUE_BYTES
    record = await handle.query(IncidentWorkflow.audit)
    assert record.alerts[0].labels["service"] == service  # the alert itself is kept whole


async def test_too_many_labels_or_an_overlong_value_is_a_422_naming_the_field(http, delivery):
    many = prom_alert(**{f"l{i}": "v" for i in range(MAX_PAIRS)})
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(many)), headers=BEARER)
    assert response.status_code == 422 and "alerts.0.labels" in response.json()["error"]
    long_value = prom_alert(instance="x" * 5000)
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(long_value)), headers=BEARER)
    assert response.status_code == 422 and "alerts.0.labels.instance" in response.json()["error"]
    assert delivery.calls == 0


async def test_long_annotations_are_cut_not_refused(http, client, delivery):
    alert = {**prom_alert(fingerprint="a2200000000000aa"), "annotations": {"description": "d" * 50_000}}
    response = await http.post("/v1/alerts/alertmanager", content=body(alertmanager(alert)), headers=BEARER)
    assert response.status_code == 202, response.text
    history = await client.get_workflow_handle(response.json()["incidents"][0]["id"]).fetch_history()
    payload = history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data.decode()
    description = json.loads(payload)["alerts"][0]["annotations"]["description"]
    assert len(description) == MAX_ANNOTATION_VALUE and description.endswith(TRUNCATED)

