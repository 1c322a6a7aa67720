"""SNS as SNS expects: an outage of the certificate host is a 503 (SNS retries), a
certificate that does not verify is a 401, and pinned certificates need no host at all.

The certificate host is a local HTTPS server on 127.0.0.1 with a certificate this module
makes (a CA, a server certificate for 127.0.0.1/localhost, and SNS's signing certificate,
all X.509 v3). It starts *down*: its port is bound but not listening, so connections are
refused, and nobody else can take the port before ``up()``.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from selfheal.ingress.app import create_app
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from selfheal.ingress.sns import SnsError, SnsUnavailable, SnsVerifier
from tests.ingress.conftest import settings
from tests.ingress.test_sns import NOW, confirmation, notification, sign

SHORT = 0.3  # the certificate timeout under test: seconds, never a real wait


# --- certificates ----------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    server_cert: Path
    server_key: Path
    signing_key: rsa.RSAPrivateKey
    signing_pem: bytes
    stranger_key: rsa.RSAPrivateKey
    stranger_pem: bytes


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
           start: datetime, days: int, *, ca: bool = False, san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()  # always X.509 v3
        .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(days=1)).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
            key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    import ipaddress

    today = datetime.now(timezone.utc)  # TLS checks the real clock; the SNS checks use NOW
    ca_key = _key()
    ca = _issue("selfheal test CA", ca_key, _name("selfheal test CA"), ca_key, today, 2, ca=True)
    server_key = _key()
    server = _issue("localhost", server_key, ca.subject, ca_key, today, 2,
                    san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    signing_key, stranger_key = _key(), _key()
    signing = _issue("sns.us-east-1.amazonaws.com", signing_key, ca.subject, ca_key, NOW, 30)
    stranger = _issue("not-sns.example", stranger_key, ca.subject, ca_key, NOW, 30)
    where = tmp_path_factory.mktemp("pki")
    (where / "server.pem").write_bytes(_pem(server) + _pem(ca))
    (where / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Pki(_pem(ca), where / "server.pem", where / "server.key", signing_key, _pem(signing), stranger_key, _pem(stranger))


# --- the certificate host --------------------------------------------------------------

CERT_NAME = "SimpleNotificationService-" + hashlib.md5(b"selfheal", usedforsecurity=False).hexdigest() + ".pem"


class CertHost:
    """HTTPS on 127.0.0.1 standing in for ``sns.<region>.amazonaws.com``; down until ``up()``."""

    def __init__(self, pki: Pki) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {"/" + CERT_NAME: (200, pki.signing_pem)}
        self.requests: list[str] = []
        self.stalling = False  # answers wait until the test ends: a host that never answers
        self._release = threading.Event()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(pki.server_cert, pki.server_key)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                if host.stalling:
                    host._release.wait(10)
                    return
                status, body = host.routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (the timeout test) is expected

        self._server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self._server.server_bind()  # bound, not listening: connections are refused
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, name: str = CERT_NAME) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    @property
    def pattern(self) -> str:
        return rf"^https://127\.0\.0\.1:{self.port}/[A-Za-z0-9._-]+\.pem$"

    def up(self) -> None:
        self._server.server_activate()
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


@pytest.fixture
def host(pki: Pki) -> Iterator[CertHost]:
    h = CertHost(pki)
    try:
        yield h
    finally:
        h.close()


@pytest_asyncio.fixture
async def tls_http(pki: Pki):
    trust = ssl.create_default_context(cadata=pki.ca_pem.decode())
    async with httpx.AsyncClient(verify=trust, trust_env=False, timeout=5) as client:
        yield client


def verifier(http: httpx.AsyncClient, host: CertHost, **kwargs: Any) -> SnsVerifier:
    return SnsVerifier(http, cert_url_pattern=host.pattern, cert_timeout=SHORT, **kwargs)


def signed(pki: Pki, host: CertHost, key: rsa.RSAPrivateKey | None = None, **fields: Any) -> dict[str, Any]:
    return sign(notification(**fields), key or pki.signing_key, host.url(), "2")


def post(http: httpx.AsyncClient, message: dict[str, Any]):
    return http.post("/v1/alerts/sns", content=json.dumps(message).encode(),
                     headers={"Content-Type": "text/plain; charset=UTF-8"})


@pytest_asyncio.fixture
async def ingress(client, task_queue, tls_http, host):
    """The app with a verifier: ``await ingress(**verifier kwargs)`` -> (http client, delivery)."""
    made: list[httpx.AsyncClient] = []

    async def make(**kwargs: Any) -> tuple[httpx.AsyncClient, Delivery]:
        delivery = Delivery(client, task_queue)
        app = create_app(settings(), delivery, verifier(tls_http, host, **kwargs), now=lambda: NOW)
        made.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test"))
        return made[-1], delivery

    try:
        yield make
    finally:
        for http in made:
            await http.aclose()


def assert_retry(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    body = response.json()  # SnsUnavailable is answered by the framework as {"detail": reason}
    reason = body.get("error", body.get("detail"))  # ... or by the app, in its own {"error": ...}
    for word in words:
        assert word in reason, reason


# --- through the app: what SNS hears -------------------------------------------------

async def test_cert_host_down_is_503_then_the_retry_after_it_is_back_is_202(ingress, host, pki) -> None:
    http, delivery = await ingress()
    message = signed(pki, host)
    down = await post(http, message)
    assert_retry(down, "could not fetch signing certificate", host.url(), "ConnectError")
    assert delivery.calls == 0  # nothing reached Temporal
    host.up()
    back = await post(http, message)  # SNS's retry: the very same message
    assert back.status_code == 202, back.text
    assert delivery.calls == 1 and host.requests == ["/" + CERT_NAME]


async def test_cert_host_answering_500_is_503(ingress, host, pki) -> None:
    host.up()
    host.routes["/" + CERT_NAME] = (500, b"<Error>InternalError</Error>")
    http, delivery = await ingress()
    message = signed(pki, host)
    assert_retry(await post(http, message), "HTTP 500")
    assert delivery.calls == 0
    host.routes["/" + CERT_NAME] = (200, pki.signing_pem)  # failures are not cached
    assert (await post(http, message)).status_code == 202
    assert host.requests == ["/" + CERT_NAME] * 2


async def test_cert_host_that_does_not_answer_is_503_within_the_timeout(ingress, host, pki) -> None:
    host.up()
    host.stalling = True
    http, delivery = await ingress()
    started = time.monotonic()
    response = await post(http, signed(pki, host))
    assert time.monotonic() - started < SHORT + 2
    assert_retry(response, f"no answer within {SHORT:g} s")
    assert delivery.calls == 0 and host.requests == ["/" + CERT_NAME]


async def test_a_certificate_that_does_not_verify_is_401(ingress, host, pki) -> None:
    host.up()
    host.routes["/stranger.pem"] = (200, pki.stranger_pem)
    host.routes["/garbage.pem"] = (200, b"not a certificate")
    http, delivery = await ingress()
    forged = await post(http, signed(pki, host, key=pki.stranger_key))
    assert forged.status_code == 401 and "signature invalid" in forged.json()["error"]
    for name, reason in [("stranger.pem", "signature invalid"), ("garbage.pem", "did not return a PEM certificate"),
                         ("missing.pem", "HTTP 404")]:
        response = await post(http, sign(notification(), pki.signing_key, host.url(name)))
        assert response.status_code == 401 and reason in response.json()["error"], response.text
    assert delivery.calls == 0


async def test_a_pinned_directory_verifies_with_the_host_down_and_never_fetches(ingress, host, pki, tmp_path) -> None:
    (tmp_path / CERT_NAME).write_bytes(pki.signing_pem)
    http, delivery = await ingress(cert_dir=tmp_path)
    response = await post(http, signed(pki, host))  # the host is down: a fetch would be a 503
    assert response.status_code == 202, response.text
    assert delivery.calls == 1
    host.up()
    forged = await post(http, signed(pki, host, key=pki.stranger_key, MessageId="forged"))
    assert forged.status_code == 401  # a pinned certificate verifies like a fetched one
    assert host.requests == []


async def test_a_certificate_missing_from_the_pinned_directory_is_503_until_it_is_added(ingress, host, pki, tmp_path) -> None:
    host.up()  # up, and still never asked
    http, delivery = await ingress(cert_dir=tmp_path)
    message = signed(pki, host)
    assert_retry(await post(http, message), f"no pinned certificate {CERT_NAME}")
    assert str(tmp_path) not in (await post(http, message)).text  # the body names the file, not the directory
    (tmp_path / CERT_NAME).write_bytes(pki.signing_pem)  # SNS rotated; the operator adds the new one
    assert (await post(http, message)).status_code == 202
    assert delivery.calls == 1 and host.requests == []


async def test_a_subscription_confirmation_whose_certificate_is_unreachable_is_503(ingress, host, pki) -> None:
    http, delivery = await ingress(subscribe_url_pattern=rf"^https://127\.0\.0\.1:{host.port}/\?[^\s#]*$")
    message = sign(confirmation(f"https://127.0.0.1:{host.port}/?Action=ConfirmSubscription&Token=t"),
                   pki.signing_key, host.url())
    assert_retry(await post(http, message), "ConnectError")
    assert delivery.calls == 0


# --- the verifier alone --------------------------------------------------------------

@pytest.mark.parametrize("status, unavailable", [(502, True), (503, True), (429, True), (408, True),
                                                 (403, False), (404, False), (410, False), (301, False)])
async def test_which_answers_of_the_cert_host_are_outages(status: int, unavailable: bool, tls_http, host, pki) -> None:
    host.up()
    host.routes["/" + CERT_NAME] = (status, b"")
    with pytest.raises(SnsUnavailable if unavailable else SnsError, match=f"HTTP {status}"):
        await verifier(tls_http, host).verify(signed(pki, host), NOW)


async def test_a_cert_host_without_our_trust_is_an_outage_not_a_refusal(host, pki) -> None:
    host.up()  # its TLS certificate is from a CA this client does not trust
    async with httpx.AsyncClient(trust_env=False, timeout=5) as untrusting:
        with pytest.raises(SnsUnavailable, match="ConnectError"):
            await verifier(untrusting, host).verify(signed(pki, host), NOW)


async def test_fetched_certificates_stay_cached_by_url(tls_http, host, pki) -> None:
    host.up()
    v = verifier(tls_http, host)
    await v.verify(signed(pki, host), NOW)
    host.stalling = True  # a second fetch would time out
    await v.verify(signed(pki, host, MessageId="again"), NOW)
    assert host.requests == ["/" + CERT_NAME]


async def test_the_subscribe_url_unreachable_is_503_and_a_refusal_stays_401(tls_http, host, pki, tmp_path) -> None:
    (tmp_path / CERT_NAME).write_bytes(pki.signing_pem)
    v = verifier(tls_http, host, cert_dir=tmp_path, subscribe_url_pattern=rf"^https://127\.0\.0\.1:{host.port}/\?[^\s#]*$")
    message = sign(confirmation(f"https://127.0.0.1:{host.port}/?Action=ConfirmSubscription&Token=t"),
                   pki.signing_key, host.url())
    with pytest.raises(SnsUnavailable, match="could not confirm the subscription: ConnectError"):
        await v.confirm_subscription(message, NOW)
    host.up()
    host.routes["/?Action=ConfirmSubscription&Token=t"] = (403, b"<Error>AuthorizationError</Error>")
    with pytest.raises(SnsError, match="HTTP 403"):
        await v.confirm_subscription(message, NOW)
    host.routes["/?Action=ConfirmSubscription&Token=t"] = (200, b"<ConfirmSubscriptionResponse/>")
    await v.confirm_subscription(message, NOW)
    assert host.requests == ["/?Action=ConfirmSubscription&Token=t"] * 2  # the certificate was pinned


@pytest.mark.parametrize("name", ["..pem", ".hidden.pem", "a b.pem", "x.pem.txt", "..%2Fsecret.pem"])
async def test_a_url_that_names_no_pinned_file_is_refused(name: str, tls_http, host, pki, tmp_path) -> None:
    v = SnsVerifier(tls_http, cert_url_pattern=r"^https://127\.0\.0\.1:[0-9]+/.*$", cert_dir=tmp_path)
    with pytest.raises(SnsError, match="does not end in a certificate file name"):
        await v.verify(sign(notification(), pki.signing_key, host.url(name)), NOW)


async def test_a_pinned_file_that_is_not_a_certificate_is_refused(tls_http, host, pki, tmp_path) -> None:
    (tmp_path / CERT_NAME).write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(SnsError, match="pinned certificate for .* is not a PEM certificate"):
        await verifier(tls_http, host, cert_dir=tmp_path).verify(signed(pki, host), NOW)


def test_the_pinned_directory_must_exist(tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    for wrong in (tmp_path / "absent", tmp_path / "a-file"):
        with pytest.raises(ValueError, match="is not a directory"):
            SnsVerifier(httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))), cert_dir=wrong)


def test_the_pinned_directory_setting() -> None:
    assert IngressSettings.from_mapping({"SELFHEAL_INGRESS_SNS_CERT_DIR": "/etc/selfheal/sns"}).sns_cert_dir == "/etc/selfheal/sns"
    assert IngressSettings.from_mapping({}).sns_cert_dir is None


def test_sns_unavailable_is_not_a_refusal() -> None:
    exc = SnsUnavailable("cert host down")
    assert not isinstance(exc, SnsError)
    assert exc.status_code == 503 and exc.reason == str(exc) == "cert host down"

