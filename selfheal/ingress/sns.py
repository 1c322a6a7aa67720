"""Amazon SNS HTTP(S) deliveries of CloudWatch alarms: verify, confirm, parse.

Over 300 lines on purpose: verifying a message (signature, certificate, its fetching and
pinning, timestamps) is one chain of checks; reading the alarm is ``cloudwatch.py``.

SNS proves a message is its own by signing it with a key whose X.509 certificate it
publishes at ``SigningCertURL``; anyone can post JSON to our endpoint, so nothing in a
message is used before ``SnsVerifier.verify`` has checked it. Every refusal is an
``SnsError`` whose text says what is wrong; it is meant to be sent back as a 4xx body.
A certificate that could not be had (its host down, slow, or answering 5xx) is not a
refusal but ``SnsUnavailable``, a 503: SNS retries only server-side errors, and a 4xx
would lose the alarm for good.

Where the ingress cannot reach AWS, an operator pins SNS's certificates in a directory
(``cert_dir``): the certificate for a ``SigningCertURL`` is the file of the same name as
the URL's last path segment (``SimpleNotificationService-<hash>.pem``), and nothing is
ever fetched.

Only the JSON envelope SNS posts by default is supported: with "raw message delivery"
the body carries no signature and could not be told apart from a forgery.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.exceptions import HTTPException


# ASCII classes, not \d: \d also matches non-ASCII digits. The host must be followed
# directly by "/", so no suffix (".evil.com"), userinfo ("@evil.com") or port can follow.
_REGION = r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}"
_SNS_HOST = rf"sns\.{_REGION}\.amazonaws\.com(?:\.cn)?"
DEFAULT_CERT_URL_PATTERN = rf"^https://{_SNS_HOST}/[A-Za-z0-9._/-]+\.pem$"
DEFAULT_SUBSCRIBE_URL_PATTERN = rf"^https://{_SNS_HOST}/\?[^\s#@\\]*$"

# The keys SNS signs, in the order it signs them (AWS: "Verifying the signatures of
# Amazon SNS messages"). Subject is signed only when the message has one.
_SIGNED_KEYS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# A certificate is ~2 KB; anything much larger is not one and is not worth reading.
_MAX_CERT_BYTES = 64 * 1024
# The whole certificate fetch, connect to last byte. SNS waits 15 s for our answer, and a
# delivery to Temporal may take 5 s after it.
DEFAULT_CERT_TIMEOUT = 5.0
# 4xx answers that speak of the moment, not of the URL: too slow, too many requests.
_TRANSIENT_STATUS = frozenset({408, 429})
# A pinned certificate's file name: one path segment, no dot files, no separators.
_PINNED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.pem")
_RETRY_AFTER = "5"


class SnsError(Exception):
    """Why an SNS message was refused, in words fit for the HTTP response body."""

    @property
    def reason(self) -> str:
        return str(self)


class SnsUnavailable(HTTPException):
    """The message could not be checked now (its certificate could not be had): a 503.

    Nothing was found wrong with the message, so SNS must retry it. Not an ``SnsError``,
    every one of which is a refusal (401): an HTTP exception, which the web framework
    answers with this status, ``{"detail": reason}`` and a ``Retry-After``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(503, reason, headers={"Retry-After": _RETRY_AFTER})

    @property
    def reason(self) -> str:
        return str(self.detail)

    def __str__(self) -> str:
        return self.reason


def shown(value: object, limit: int = 120) -> str:
    # Refusals echo untrusted input; keep it short so an error body cannot be a megabyte.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def aware_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise SnsError(f"field {field!r} is missing or not a string")
    try:
        parsed = datetime.fromisoformat(value)  # 3.11+: also "...Z" and "...+0000"
    except ValueError:
        raise SnsError(f"{field} {shown(value)} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise SnsError(f"{field} {shown(value)} has no time zone")
    return parsed


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The bytes SNS signed: ``"Key\\nValue\\n"`` for each signed key of the message's Type."""
    kind = message.get("Type")
    keys = _SIGNED_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise SnsError(f"unknown message Type {shown(kind)}; expected one of {', '.join(_SIGNED_KEYS)}")
    parts: list[str] = []
    for key in keys:
        value = message.get(key)
        if key == "Subject" and value is None:  # absent, or null as some SNS paths send it
            continue
        if value is None:
            raise SnsError(f"missing field {key!r}")
        if not isinstance(value, str):
            raise SnsError(f"field {key!r} is not a string")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


class SnsVerifier:
    """Checks that a message was signed by SNS for an allowed topic, recently.

    ``allowed_topics=None`` admits any topic; an empty list admits none (fail closed).
    Timestamps more than ``max_age`` away from ``now`` in either direction are refused:
    old ones are replays, and a future one would stretch a replay window.
    A certificate fetch must be done within ``cert_timeout`` seconds; redirects are never
    followed, since a redirect would lead away from the host the URL pattern admitted.
    With ``cert_dir``, certificates come only from that directory (see the module's
    docstring) and nothing is fetched; the URL must still match the pattern.
    Certificates are cached by URL, whichever way they came; failures are not cached.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        cert_url_pattern: str = DEFAULT_CERT_URL_PATTERN,
        allowed_topics: list[str] | None = None,
        max_age: timedelta = timedelta(hours=1),
        subscribe_url_pattern: str = DEFAULT_SUBSCRIBE_URL_PATTERN,
        cert_cache_size: int = 32,
        cert_dir: str | os.PathLike[str] | None = None,
        cert_timeout: float = DEFAULT_CERT_TIMEOUT,
    ) -> None:
        if cert_dir is not None and not Path(cert_dir).is_dir():
            raise ValueError(f"SNS certificate directory {os.fspath(cert_dir)!r} is not a directory")
        self._cert_dir = None if cert_dir is None else Path(cert_dir)
        self._cert_timeout = cert_timeout
        self._http = http
        self._cert_url = re.compile(cert_url_pattern)
        self._subscribe_url = re.compile(subscribe_url_pattern)
        self._topics = None if allowed_topics is None else frozenset(allowed_topics)
        self._max_age = max_age
        self._cache_size = max(1, cert_cache_size)
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def verify(self, message: dict[str, Any], now: datetime) -> None:
        """Return if the message is genuine and acceptable; raise ``SnsError`` otherwise,
        or ``SnsUnavailable`` when its certificate cannot be had now."""
        if not isinstance(message, dict):
            raise SnsError("SNS message is not a JSON object")
        signed = string_to_sign(message)  # also checks Type and the signed fields
        for key in ("SignatureVersion", "Signature", "SigningCertURL"):
            if not isinstance(message.get(key), str):
                raise SnsError(f"missing field {key!r}")
        topic = message["TopicArn"]
        if self._topics is not None and topic not in self._topics:
            raise SnsError(f"topic {shown(topic)} is not allowed")
        algorithm = _HASHES.get(message["SignatureVersion"])
        if algorithm is None:
            raise SnsError(f"unsupported SignatureVersion {shown(message['SignatureVersion'])}; expected '1' or '2'")
        url = message["SigningCertURL"]
        if not self._cert_url.fullmatch(url):
            raise SnsError(f"SigningCertURL {shown(url)} is not allowed")
        # Checked before fetching anything: a replay costs us no request.
        sent = aware_time(message["Timestamp"], "Timestamp")
        if now - sent > self._max_age:
            raise SnsError(f"message is too old: Timestamp {message['Timestamp']} is more than {self._max_age} ago")
        if sent - now > self._max_age:
            raise SnsError(f"message Timestamp {message['Timestamp']} is more than {self._max_age} in the future")
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SnsError("Signature is not valid base64") from None
        cert = await self._certificate(url)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsError(f"signing certificate at {url} is not valid at {now.isoformat()}")
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsError(f"signing certificate at {url} does not hold an RSA key")
        try:
            public_key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsError("signature invalid: the message was not signed by the certificate's key") from None

    async def confirm_subscription(self, message: dict[str, Any], now: datetime | None = None) -> None:
        """Verify a SubscriptionConfirmation, then GET its SubscribeURL to confirm it.

        Type and URL are checked before any request is made, so a forged confirmation
        cannot make us fetch anything.
        """
        if not isinstance(message, dict) or message.get("Type") != "SubscriptionConfirmation":
            raise SnsError("only a SubscriptionConfirmation can be confirmed")
        url = message.get("SubscribeURL")
        if not isinstance(url, str):
            raise SnsError("missing field 'SubscribeURL'")
        if not self._subscribe_url.fullmatch(url):
            raise SnsError(f"SubscribeURL {shown(url)} is not allowed")
        await self.verify(message, now or datetime.now(timezone.utc))
        try:
            response = await self._http.get(url, follow_redirects=False)
        except httpx.TransportError as exc:  # SNS unreachable: SNS retries the confirmation on a 503
            raise SnsUnavailable(f"could not confirm the subscription: {_failure(exc)}") from None
        except httpx.HTTPError as exc:
            raise SnsError(f"could not confirm the subscription: {type(exc).__name__}: {exc}") from None
        if _transient(response.status_code):
            raise SnsUnavailable(f"confirming the subscription failed: SNS answered HTTP {response.status_code}")
        if not response.is_success:
            raise SnsError(f"confirming the subscription failed: SNS answered HTTP {response.status_code}")

    async def _certificate(self, url: str) -> x509.Certificate:
        cert = self._certs.get(url)
        if cert is not None:
            self._certs.move_to_end(url)
            return cert
        if self._cert_dir is not None:
            body, where = self._pinned(url, self._cert_dir), "pinned certificate for"
        else:
            body, where = await self._fetch(url), ""
        try:
            cert = x509.load_pem_x509_certificate(body)
        except ValueError:
            if where:
                raise SnsError(f"the {where} {url} is not a PEM certificate") from None
            raise SnsError(f"{url} did not return a PEM certificate") from None
        self._certs[url] = cert  # failures are not cached: the next delivery retries
        while len(self._certs) > self._cache_size:
            self._certs.popitem(last=False)
        return cert

    async def _fetch(self, url: str) -> bytes:
        """The certificate's bytes from its host; ``SnsUnavailable`` when the host cannot give them now.

        Outages are 503 (SNS retries): no connection, a timeout, a TLS failure (a proxy or
        a broken path; the message is not shown false by it), a 5xx, a 408 or 429. A 4xx
        is 401: SNS's certificate host serves every certificate SNS signs with, so "not
        found" or "forbidden" is its answer about this URL, not an outage, and the same
        URL would get the same answer on every retry. A redirect (never followed) is
        401 too, as is a body that is not a certificate: the host answered.
        """
        try:
            async with asyncio.timeout(self._cert_timeout):
                async with self._http.stream("GET", url, follow_redirects=False, timeout=self._cert_timeout) as response:
                    if _transient(response.status_code):
                        raise SnsUnavailable(f"could not fetch signing certificate {url}: HTTP {response.status_code}")
                    if response.status_code != 200:
                        raise SnsError(f"could not fetch signing certificate {url}: HTTP {response.status_code}")
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > _MAX_CERT_BYTES:
                            raise SnsError(f"signing certificate {url} is larger than {_MAX_CERT_BYTES} bytes")
        except (TimeoutError, httpx.TimeoutException):
            raise SnsUnavailable(
                f"could not fetch signing certificate {url}: no answer within {self._cert_timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise SnsUnavailable(f"could not fetch signing certificate {url}: {_failure(exc)}") from None
        except httpx.HTTPError as exc:  # e.g. an undecodable body: the host answered
            raise SnsError(f"could not fetch signing certificate {url}: {type(exc).__name__}: {exc}") from None
        return body

    @staticmethod
    def _pinned(url: str, directory: Path) -> bytes:
        """The pinned certificate named by the URL's last path segment; never a fetch."""
        name = PurePosixPath(urlsplit(url).path).name
        if not _PINNED_NAME.fullmatch(name):
            raise SnsError(f"SigningCertURL {shown(url)} does not end in a certificate file name")
        try:
            with (directory / name).open("rb") as file:
                body = file.read(_MAX_CERT_BYTES + 1)
        except OSError as exc:
            # Not a refusal: SNS rotates its certificate now and then, and the new one is
            # missing here until an operator adds it. A 503 keeps SNS retrying meanwhile;
            # a forged name gains nothing, since it is never fetched. The body names the
            # file, never the directory.
            what = "there is no pinned certificate" if isinstance(exc, FileNotFoundError) else "could not read the pinned certificate"
            raise SnsUnavailable(f"{what} {name} for {url}; add that file to the pinned certificate directory") from None
        if len(body) > _MAX_CERT_BYTES:
            raise SnsError(f"the pinned certificate for {url} is larger than {_MAX_CERT_BYTES} bytes")
        return body


def _transient(status: int) -> bool:
    return status >= 500 or status in _TRANSIENT_STATUS


def _failure(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
