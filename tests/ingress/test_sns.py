"""SNS signature verification, subscription confirmation and CloudWatch alarm parsing.

Certificates are made here and served from a loopback HTTP server, and messages are
signed the way SNS signs them, with a string-to-sign built independently of the module
(``aws_string_to_sign``) so a mistake in ``string_to_sign`` cannot sign its own tests.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from selfheal.ingress.sns import (
    DEFAULT_CERT_URL_PATTERN,
    DEFAULT_SUBSCRIBE_URL_PATTERN,
    SnsError,
    SnsVerifier,
    string_to_sign,
)
from selfheal.ingress.cloudwatch import parse_cloudwatch_alarm
from selfheal.contract import Alert

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
TIMESTAMP = "2026-11-25T11:59:58.123Z"
TOPIC = "arn:aws:sns:us-east-1:123456789012:selfheal-alarms"


# --- keys, certificates, signing -----------------------------------------------------

@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    pem: bytes


def make_signer(common_name: str) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Signer(key, cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer("sns.us-east-1.amazonaws.com")


@pytest.fixture(scope="module")
def stranger() -> Signer:
    return make_signer("not-sns.example")


def aws_string_to_sign(msg: dict[str, Any]) -> bytes:
    """Straight from the AWS docs, deliberately not sharing code with the module."""
    if msg["Type"] == "Notification":
        keys = ["Message", "MessageId", *(["Subject"] if "Subject" in msg else []), "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{k}\n{msg[k]}\n" for k in keys).encode()


def sign(msg: dict[str, Any], key: rsa.RSAPrivateKey, cert_url: str, version: str = "1") -> dict[str, Any]:
    out = dict(msg, SignatureVersion=version, SigningCertURL=cert_url)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    out["Signature"] = base64.b64encode(key.sign(aws_string_to_sign(out), padding.PKCS1v15(), digest)).decode()
    return out


def notification(**overrides: Any) -> dict[str, Any]:
    msg = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": 'ALARM: "api-5xx" in US East (N. Virginia)',
        "Message": json.dumps(alarm_body()),
        "Timestamp": TIMESTAMP,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    }
    msg.update(overrides)
    return msg


# --- the loopback server -------------------------------------------------------------

@dataclass
class Loopback:
    base: str
    routes: dict[str, tuple[int, bytes]]
    requests: list[str] = field(default_factory=list)  # path with query, in arrival order

    def url(self, path: str) -> str:
        return self.base + path

    def paths(self) -> list[str]:
        return [urlsplit(r).path for r in self.requests]


@pytest.fixture(scope="module")
def loopback_server(signer: Signer, stranger: Signer) -> Iterator[Loopback]:
    state = Loopback(base="", routes={
        "/cert.pem": (200, signer.pem),
        "/stranger.pem": (200, stranger.pem),
        "/garbage.pem": (200, b"this is not a certificate"),
        "/confirm": (200, b"<ConfirmSubscriptionResponse/>"),
        "/denied": (403, b"<Error>AuthorizationError</Error>"),
    })

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)  # recorded before answering: visible once the client has the reply
            status, body = state.routes.get(urlsplit(self.path).path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def loopback(loopback_server: Loopback) -> Loopback:
    # One server per module (shutdown waits out a poll interval); a clean request log per test.
    loopback_server.requests.clear()
    return loopback_server


@pytest.fixture
async def sns_http() -> Any:
    # Not named "http": tests/ingress/conftest.py has an "http" fixture for the app.
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        yield client


def loopback_verifier(client: httpx.AsyncClient, lb: Loopback, **kwargs: Any) -> SnsVerifier:
    return SnsVerifier(
        client,
        cert_url_pattern=rf"^{re.escape(lb.base)}/[a-z]+\.pem$",
        subscribe_url_pattern=rf"^{re.escape(lb.base)}/(confirm|denied)\?[^\s#]*$",
        **kwargs,
    )


# --- string to sign ------------------------------------------------------------------

def test_string_to_sign_notification_is_exactly_the_documented_format() -> None:
    msg = {"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:t", "Subject": "S",
           "Message": "line1\nline2", "Timestamp": "2026-01-01T00:00:00.000Z", "Signature": "ignored",
           "SignatureVersion": "1", "SigningCertURL": "ignored", "UnsubscribeURL": "ignored"}
    assert string_to_sign(msg) == (
        b"Message\nline1\nline2\nMessageId\nm1\nSubject\nS\n"
        b"Timestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n"
    )
    without_subject = {k: v for k, v in msg.items() if k != "Subject"}
    expected = b"Message\nline1\nline2\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n"
    assert string_to_sign(without_subject) == expected
    assert string_to_sign(dict(msg, Subject=None)) == expected


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_string_to_sign_confirmations_include_subscribe_url_and_token(kind: str) -> None:
    msg = {"Type": kind, "MessageId": "m2", "TopicArn": "arn:t", "Message": "You have chosen...",
           "Timestamp": "T", "Token": "tok", "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?a=b",
           "Subject": "not signed for confirmations"}
    assert string_to_sign(msg) == (
        b"Message\nYou have chosen...\nMessageId\nm2\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?a=b\n"
        b"Timestamp\nT\nToken\ntok\nTopicArn\narn:t\nType\n" + kind.encode() + b"\n"
    )


def test_string_to_sign_refuses_unknown_type_and_missing_fields() -> None:
    with pytest.raises(SnsError, match="unknown message Type 'Bogus'"):
        string_to_sign(notification(Type="Bogus"))
    with pytest.raises(SnsError, match="missing field 'MessageId'"):
        string_to_sign({k: v for k, v in notification().items() if k != "MessageId"})
    with pytest.raises(SnsError, match="field 'Message' is not a string"):
        string_to_sign(notification(Message={"not": "a string"}))


# --- verify --------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
async def test_valid_notification_verifies_and_the_certificate_is_cached(
    version: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    verifier = loopback_verifier(sns_http, loopback)
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"), version)
    await verifier.verify(msg, NOW)
    await verifier.verify(sign(notification(MessageId="another"), signer.key, loopback.url("/cert.pem"), version), NOW)
    assert loopback.paths() == ["/cert.pem"]


async def test_signature_version_selects_the_hash(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    sha1_signed = sign(notification(), signer.key, loopback.url("/cert.pem"), "1")
    with pytest.raises(SnsError, match="signature invalid"):
        await loopback_verifier(sns_http, loopback).verify(dict(sha1_signed, SignatureVersion="2"), NOW)


@pytest.mark.parametrize("field_name, value", [
    ("Message", json.dumps({"AlarmName": "something-else"})),
    ("Subject", "a different subject"),
    ("TopicArn", TOPIC + "-other"),
    ("Timestamp", "2026-11-25T11:59:59.000Z"),
])
async def test_tampered_message_fails(
    field_name: str, value: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    msg[field_name] = value
    with pytest.raises(SnsError, match="signature invalid"):
        await loopback_verifier(sns_http, loopback).verify(msg, NOW)


async def test_removing_the_subject_breaks_the_signature(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    del msg["Subject"]
    with pytest.raises(SnsError, match="signature invalid"):
        await loopback_verifier(sns_http, loopback).verify(msg, NOW)


async def test_signature_by_another_key_fails(
    sns_http: httpx.AsyncClient, loopback: Loopback, stranger: Signer, signer: Signer,
) -> None:
    verifier = loopback_verifier(sns_http, loopback)
    with pytest.raises(SnsError, match="signature invalid"):
        await verifier.verify(sign(notification(), stranger.key, loopback.url("/cert.pem")), NOW)
    # ... and the stranger's own certificate does not vouch for SNS's key either.
    with pytest.raises(SnsError, match="signature invalid"):
        await verifier.verify(sign(notification(), signer.key, loopback.url("/stranger.pem")), NOW)
    assert loopback.paths() == ["/cert.pem", "/stranger.pem"]


@pytest.mark.parametrize("path", ["/cert.txt", "/cert.pem?x=1", "/../cert.pem", "/CERT.pem"])
async def test_cert_url_outside_the_pattern_is_refused_before_any_fetch(
    path: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(notification(), signer.key, loopback.url(path))
    with pytest.raises(SnsError, match="SigningCertURL .* is not allowed"):
        await loopback_verifier(sns_http, loopback).verify(msg, NOW)
    assert loopback.requests == []


DEFAULT_ACCEPTS = [
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    "https://sns.eu-central-2.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
]
DEFAULT_REFUSES = [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",            # not TLS
    "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",  # suffix
    "https://sns.us-east-1.amazonaws.com.cn.evil.com/x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",                              # userinfo
    "https://sns.us-east-1.amazonaws.com:443@evil.com/x.pem",
    "https://sns.us-east-1.amazonaws.com\\@evil.com/x.pem",
    "https://sns.us-east-1.amazonaws.com#@evil.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem",                                  # port
    "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
    "https://evilsns.us-east-1.amazonaws.com/x.pem",
    "https://sns.evil.amazonaws.com/x.pem",                                            # not a region
    "https://sns.us-east-\u0661.amazonaws.com/x.pem",                                  # Arabic-Indic digit
    "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com/x.pem?.evil.com",
    "https://sns.us-east-1.amazonaws.com/x.pem\n",
    "https://sns.us-east-1.amazonaws.com/x.txt",
    "https://SNS.US-EAST-1.AMAZONAWS.COM/x.pem",
    "https://sns.us-east-1.amazonaws.com",
]


@pytest.mark.parametrize("url, accepted", [(u, True) for u in DEFAULT_ACCEPTS] + [(u, False) for u in DEFAULT_REFUSES])
async def test_default_cert_url_pattern(url: str, accepted: bool, signer: Signer) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=signer.pem)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        verifier = SnsVerifier(client)  # the default pattern
        msg = sign(notification(), signer.key, url)
        if accepted:
            await verifier.verify(msg, NOW)
            assert seen == [url]
        else:
            with pytest.raises(SnsError, match="SigningCertURL .* is not allowed"):
                await verifier.verify(msg, NOW)
            assert seen == []


@pytest.mark.parametrize("url, accepted", [
    ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=ab12", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=ab12", True),
    ("https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription", False),
    ("https://sns.us-east-1.amazonaws.com@evil.com/?Action=ConfirmSubscription", False),
    ("http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", False),
    ("https://sns.us-east-1.amazonaws.com/evil?Action=ConfirmSubscription", False),
])
def test_default_subscribe_url_pattern(url: str, accepted: bool) -> None:
    assert bool(re.fullmatch(DEFAULT_SUBSCRIBE_URL_PATTERN, url)) is accepted
    assert re.fullmatch(DEFAULT_CERT_URL_PATTERN, url) is None  # a SubscribeURL is never a cert URL


@pytest.mark.parametrize("timestamp, reason", [
    ("2026-11-25T10:59:59.000Z", "too old"),
    ("2026-11-25T13:00:01.000Z", "in the future"),
    ("yesterday", "not an ISO 8601 time"),
    ("2026-11-25T11:59:58", "no time zone"),
])
async def test_bad_timestamps_fail_without_fetching(
    timestamp: str, reason: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(notification(Timestamp=timestamp), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match=reason):
        await loopback_verifier(sns_http, loopback).verify(msg, NOW)
    assert loopback.requests == []


async def test_max_age_is_configurable(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    msg = sign(notification(Timestamp="2026-11-25T11:50:00.000Z"), signer.key, loopback.url("/cert.pem"))
    await loopback_verifier(sns_http, loopback).verify(msg, NOW)
    with pytest.raises(SnsError, match="too old"):
        await loopback_verifier(sns_http, loopback, max_age=timedelta(minutes=5)).verify(msg, NOW)


async def test_unknown_type_fails(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="unknown message Type 'Surprise'"):
        await loopback_verifier(sns_http, loopback).verify(dict(msg, Type="Surprise"), NOW)
    assert loopback.requests == []


@pytest.mark.parametrize("missing", ["Signature", "SignatureVersion", "SigningCertURL", "TopicArn", "Timestamp"])
async def test_missing_field_fails(missing: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    del msg[missing]
    with pytest.raises(SnsError, match=f"missing field '{missing}'"):
        await loopback_verifier(sns_http, loopback).verify(msg, NOW)
    assert loopback.requests == []


async def test_unsupported_signature_version_and_bad_base64_fail(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    verifier = loopback_verifier(sns_http, loopback)
    with pytest.raises(SnsError, match="unsupported SignatureVersion '3'"):
        await verifier.verify(dict(msg, SignatureVersion="3"), NOW)
    with pytest.raises(SnsError, match="Signature is not valid base64"):
        await verifier.verify(dict(msg, Signature="QUJD!"), NOW)


async def test_topic_allowlist(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match=f"topic '{TOPIC}' is not allowed"):
        await loopback_verifier(sns_http, loopback, allowed_topics=["arn:aws:sns:us-east-1:123456789012:other"]).verify(msg, NOW)
    with pytest.raises(SnsError, match="is not allowed"):
        await loopback_verifier(sns_http, loopback, allowed_topics=[]).verify(msg, NOW)  # empty admits nothing
    assert loopback.requests == []
    await loopback_verifier(sns_http, loopback, allowed_topics=[TOPIC]).verify(msg, NOW)


@pytest.mark.parametrize("path, reason", [
    ("/missing.pem", "HTTP 404"),
    ("/garbage.pem", "did not return a PEM certificate"),
])
async def test_unusable_certificate_fails(
    path: str, reason: str, sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    verifier = loopback_verifier(sns_http, loopback)
    msg = sign(notification(), signer.key, loopback.url(path))
    for _ in range(2):  # failures are not cached
        with pytest.raises(SnsError, match=reason):
            await verifier.verify(msg, NOW)
    assert loopback.paths() == [path, path]


async def test_expired_certificate_fails(sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer) -> None:
    later = NOW + timedelta(days=31)
    msg = sign(notification(Timestamp=later.isoformat()), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="signing certificate .* is not valid"):
        await loopback_verifier(sns_http, loopback).verify(msg, later)


async def test_certificate_cache_is_bounded(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer, stranger: Signer,
) -> None:
    verifier = loopback_verifier(sns_http, loopback, cert_cache_size=1)
    ours = sign(notification(), signer.key, loopback.url("/cert.pem"))
    theirs = sign(notification(), stranger.key, loopback.url("/stranger.pem"))
    for msg in (ours, ours, theirs, ours):
        await verifier.verify(msg, NOW)
    assert loopback.paths() == ["/cert.pem", "/stranger.pem", "/cert.pem"]


# --- confirm_subscription ------------------------------------------------------------

def confirmation(subscribe_url: str, token: str = "2336412f37fb687f5d51e6e2425dacbba") -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": TIMESTAMP,
    }


async def test_confirm_subscription_gets_the_subscribe_url(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    url = loopback.url(f"/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok-123")
    msg = sign(confirmation(url, token="tok-123"), signer.key, loopback.url("/cert.pem"), "2")
    await loopback_verifier(sns_http, loopback).confirm_subscription(msg, NOW)
    assert loopback.paths() == ["/cert.pem", "/confirm"]
    query = parse_qs(urlsplit(loopback.requests[1]).query)
    assert query["Token"] == ["tok-123"] and query["Action"] == ["ConfirmSubscription"]


async def test_confirm_subscription_refuses_a_subscribe_url_outside_its_pattern(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    url = loopback.url("/elsewhere?Action=ConfirmSubscription&Token=tok")
    msg = sign(confirmation(url), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="SubscribeURL .* is not allowed"):
        await loopback_verifier(sns_http, loopback).confirm_subscription(msg, NOW)
    assert loopback.requests == []


async def test_confirm_subscription_does_not_follow_a_forged_message(
    sns_http: httpx.AsyncClient, loopback: Loopback, stranger: Signer,
) -> None:
    msg = sign(confirmation(loopback.url("/confirm?Token=tok")), stranger.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="signature invalid"):
        await loopback_verifier(sns_http, loopback).confirm_subscription(msg, NOW)
    assert loopback.paths() == ["/cert.pem"]


async def test_confirm_subscription_fails_on_a_non_2xx_answer(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(confirmation(loopback.url("/denied?Token=tok")), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="HTTP 403"):
        await loopback_verifier(sns_http, loopback).confirm_subscription(msg, NOW)
    assert loopback.paths() == ["/cert.pem", "/denied"]


async def test_only_subscription_confirmations_are_confirmed(
    sns_http: httpx.AsyncClient, loopback: Loopback, signer: Signer,
) -> None:
    msg = sign(notification(), signer.key, loopback.url("/cert.pem"))
    with pytest.raises(SnsError, match="only a SubscriptionConfirmation"):
        await loopback_verifier(sns_http, loopback).confirm_subscription(msg, NOW)
    unsubscribe = dict(confirmation(loopback.url("/confirm?Token=tok")), Type="UnsubscribeConfirmation")
    with pytest.raises(SnsError, match="only a SubscriptionConfirmation"):
        await loopback_verifier(sns_http, loopback).confirm_subscription(sign(unsubscribe, signer.key, loopback.url("/cert.pem")), NOW)
    assert loopback.requests == []


# --- CloudWatch alarms ---------------------------------------------------------------

ALARM_ARN = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:api-5xx"


def alarm_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "AlarmName": "api-5xx",
        "AlarmDescription": "API returns 5xx",
        "AWSAccountId": "123456789012",
        "AlarmConfigurationUpdatedTimestamp": "2026-11-01T09:00:00.000+0000",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).",
        "StateChangeTime": "2026-11-25T11:59:57.456+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": ALARM_ARN,
        "OldStateValue": "OK",
        "Trigger": {
            "MetricName": "HTTPCode_Target_5XX_Count",
            "Namespace": "AWS/ApplicationELB",
            "StatisticType": "Statistic",
            "Statistic": "SUM",
            "Dimensions": [
                {"value": "app/api/50dc6c495c0c9188", "name": "LoadBalancer"},
                {"value": "i-0abc", "name": "Instance Id.x"},
                {"value": "eu-west-1", "name": "region"},  # may not replace the alarm's own label
                {"value": "v", "name": "9lives"},
            ],
        },
    }
    body.update(overrides)
    return body


def alarm_notification(**overrides: Any) -> dict[str, Any]:
    return notification(Message=json.dumps(alarm_body(**overrides)))


def test_alarm_becomes_a_firing_alert() -> None:
    fields = parse_cloudwatch_alarm(alarm_notification())
    assert fields is not None
    alert = Alert(**fields)
    assert alert.source == "sns" and alert.status == "firing"
    assert alert.labels == {
        "alertname": "api-5xx", "region": "us-east-1", "account": "123456789012",
        "namespace": "AWS/ApplicationELB", "metric": "HTTPCode_Target_5XX_Count",
        "LoadBalancer": "app/api/50dc6c495c0c9188", "Instance_Id_x": "i-0abc", "_9lives": "v",
    }
    assert alert.annotations == {
        "description": "API returns 5xx",
        "reason": "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).",
        "alarm_arn": ALARM_ARN,
    }
    assert alert.starts_at == datetime(2026, 11, 25, 11, 59, 57, 456000, tzinfo=timezone.utc)
    assert alert.ends_at is None
    assert re.fullmatch(r"[0-9a-f]{16}", alert.fingerprint)


def test_ok_resolves_the_same_fingerprint() -> None:
    firing = parse_cloudwatch_alarm(alarm_notification())
    resolved = parse_cloudwatch_alarm(alarm_notification(NewStateValue="OK", StateChangeTime="2026-11-25T12:10:00.000+0000"))
    assert firing is not None and resolved is not None
    alert = Alert(**resolved)
    assert alert.status == "resolved"
    assert alert.fingerprint == firing["fingerprint"]
    assert alert.ends_at == datetime(2026, 11, 25, 12, 10, tzinfo=timezone.utc)
    other = parse_cloudwatch_alarm(alarm_notification(AlarmArn=ALARM_ARN + "-db"))
    assert other is not None and other["fingerprint"] != firing["fingerprint"]


def test_fingerprint_without_an_arn_uses_account_region_and_name() -> None:
    a = parse_cloudwatch_alarm(alarm_notification(AlarmArn=None))
    b = parse_cloudwatch_alarm(alarm_notification(AlarmArn=None, NewStateValue="OK"))
    c = parse_cloudwatch_alarm(alarm_notification(AlarmArn=None, AlarmName="db-slow"))
    assert a is not None and b is not None and c is not None
    assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]
    assert a["labels"]["region"] == "US East (N. Virginia)" and "alarm_arn" not in a["annotations"]


def test_insufficient_data_is_not_an_alert() -> None:
    assert parse_cloudwatch_alarm(alarm_notification(NewStateValue="INSUFFICIENT_DATA")) is None


def test_alarm_without_trigger_still_parses() -> None:
    fields = parse_cloudwatch_alarm(alarm_notification(Trigger=None, AlarmDescription=None))
    assert fields is not None
    assert set(fields["labels"]) == {"alertname", "region", "account"}
    assert "description" not in fields["annotations"]


@pytest.mark.parametrize("message, reason", [
    ("Hello world!", "Message is not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"NewStateValue": "ALARM"}), "AlarmName is missing"),
    (json.dumps(alarm_body(NewStateValue="PANIC")), "NewStateValue 'PANIC'"),
    (json.dumps(alarm_body(StateChangeTime="soon")), "StateChangeTime 'soon' is not an ISO 8601 time"),
    (json.dumps(alarm_body(Trigger={"Dimensions": {"name": "x"}})), "Trigger.Dimensions"),
    (json.dumps(alarm_body(Trigger={"Dimensions": [{"name": "x", "value": 3}]})), "Trigger.Dimensions entry"),
])
def test_malformed_alarm_message_fails(message: str, reason: str) -> None:
    with pytest.raises(SnsError, match=re.escape(reason)):
        parse_cloudwatch_alarm(notification(Message=message))


def test_only_notifications_carry_alarms() -> None:
    with pytest.raises(SnsError, match="expected a Notification"):
        parse_cloudwatch_alarm(confirmation("https://sns.us-east-1.amazonaws.com/?Token=t"))
