"""Who may post alerts: a bearer token and/or an HMAC signature of the body, per source.

Comparisons are constant-time (``hmac.compare_digest``). When both are configured for
a source, both must be valid. A source with no credentials configured refuses
everything: an open alert endpoint would let anyone open incidents.

Signatures:
  grafana  ``X-Grafana-Alerting-Signature: hex(HMAC-SHA256(secret, body))``; when Grafana
           sends ``X-Grafana-Alerting-Signature-Timestamp``, the signed data is
           ``timestamp + ":" + body`` (Grafana's webhook ``hmacConfig``; set its Timestamp
           Header to that name). A timestamp more than ``MAX_SKEW`` from now is refused,
           so a captured request cannot be replayed later
  generic  ``X-Selfheal-Signature: sha256=hex(HMAC-SHA256(secret, body))``
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Mapping

from pydantic import BaseModel, ConfigDict

GRAFANA_SIGNATURE = "x-grafana-alerting-signature"
GRAFANA_TIMESTAMP = "x-grafana-alerting-signature-timestamp"
GENERIC_SIGNATURE = "x-selfheal-signature"
MAX_SKEW = 300  # seconds
# ASCII digits and a sane length: str.isdigit() admits "²", which int() then refuses.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class SourceAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = None
    hmac_secret: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token or self.hmac_secret)


class Unauthorized(Exception):
    pass


def _digest(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def check(source: str, auth: SourceAuth, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise ``Unauthorized`` with the reason unless the request carries valid credentials."""
    if not auth.configured:
        raise Unauthorized(f"no credentials are configured for source {source!r}; it accepts nothing")
    if auth.token:
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), auth.token.encode()):
            raise Unauthorized("missing or wrong bearer token")
    if auth.hmac_secret:
        if source == "grafana":
            signature = headers.get(GRAFANA_SIGNATURE, "")
            timestamp = headers.get(GRAFANA_TIMESTAMP)
            if timestamp is not None:
                if not _UNIX_SECONDS.fullmatch(timestamp.strip()):
                    raise Unauthorized(f"{GRAFANA_TIMESTAMP} must be Unix seconds")
                if abs(now - int(timestamp.strip())) > MAX_SKEW:
                    raise Unauthorized(f"signature timestamp is more than {MAX_SKEW}s from now: a replay, or a clock off")
            signed = f"{timestamp}:".encode() + body if timestamp else body
            expected = _digest(auth.hmac_secret, signed)
        else:
            signature = headers.get(GENERIC_SIGNATURE, "").removeprefix("sha256=")
            expected = _digest(auth.hmac_secret, body)
        if not signature or not hmac.compare_digest(signature.lower().encode(), expected.encode()):
            raise Unauthorized("missing or wrong HMAC signature of the body")
