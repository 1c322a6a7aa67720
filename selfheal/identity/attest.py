"""Statements that prove who decided: what a person signs, and how it is checked.

Temporal tells an update or signal handler nothing about its caller, so a typed name
proves nothing. An approval counts only when it carries a **statement** signed by a key
the whitelist names:

- ``ssh``: the person's own key, with ``ssh-keygen -Y sign -n selfheal-approval`` (the
  format git uses for signed commits); the whitelist lists each person's keys;
- ``slack`` and ``token``: the ingress authenticated the person (Slack's request
  signature and the whitelist's user mapping; a per-person token stored hashed) and
  signs the statement with its own Ed25519 key, whose public half the whitelist lists
  under ``attestation_keys``.

A statement binds everything that makes an approval specific: the action, the incident
(or the governor), the entry, the exact target, a digest of the decision being approved,
the person, the channel, an expiry and a nonce. So a signature cannot be replayed on
another incident, a later decision, after it expired, or twice. An ingress also binds the
request it answered (``origin``: the Slack request's timestamp and a hash of Slack's
signature, or a token request's ``Idempotency-Key``), so the same request sent again,
to this ingress or another one, is attested with a fresh nonce but the same origin, and
the workflow refuses it as a replay.

Verification is deterministic (no clock, no I/O: the caller passes ``now``), so the
workflow runs it, with the keys from the whitelist snapshot in its history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

# Imported here, at the top, not inside the checks: the workflow's sandbox must not load
# cryptography's native bindings during a workflow task (it fails there); imported with
# this module, they are passed through from outside.
import sshsig
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

NAMESPACE = "selfheal-approval"
VALID_FOR = timedelta(minutes=10)
ORIGIN_MAX = 200  # characters of a statement's origin
Channel = Literal["ssh", "slack", "token"]
Action = Literal["approve", "reject", "pause", "resume", "close_breaker", "evidence"]


class Unproven(Exception):
    """A statement or signature that proves nothing; the message says why."""


class Statement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    action: Action
    subject: str           # the incident id, or the governor's workflow id
    entry: str | None = None
    target: dict[str, str] = {}
    decision: str = ""     # decision_digest() of the decision approved
    person: str
    channel: Channel
    expires: AwareDatetime
    nonce: str
    confirm: str | None = None  # the target as the person typed it, where the tier asks
    # The request an ingress answered ("slack:<timestamp>:<hash of Slack's signature>",
    # "token:<person>:<Idempotency-Key>"): one request counts once, through any ingress.
    origin: Annotated[str, Field(min_length=1, max_length=ORIGIN_MAX)] | None = None

    def canonical(self) -> bytes:
        return canonical(self)


def canonical(statement: Statement) -> bytes:
    fields = statement.model_dump(mode="json")
    if fields["origin"] is None:
        # Left out, not null: statements signed before origins existed (the CLI's, and
        # those in recorded histories) stay canonical, and their signatures still verify.
        del fields["origin"]
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def decision_digest(decision: BaseModel | None) -> str:
    return hashlib.sha256(decision.model_dump_json().encode()).hexdigest()[:32] if decision is not None else ""


def new_statement(*, now: datetime | None = None, **fields) -> Statement:
    """A statement valid for ``VALID_FOR`` from now, with a fresh nonce (signers only)."""
    now = now or datetime.now(timezone.utc)
    return Statement(**{"expires": now + VALID_FOR, "nonce": secrets.token_hex(12), **fields})


def parse(text: str) -> Statement:
    try:
        return Statement.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unproven(f"statement is malformed: {'.'.join(map(str, first['loc'])) or 'statement'}: {first['msg']}") from None


def confirmation_text(request) -> str:
    """The target as a person types it to confirm: the thing that differs between mistakes.

    ``checkout:41`` (an ECS task definition), ``api.service@web-1`` (a unit on a host),
    ``queue-workers=6`` (a group and its new capacity), ``i-0abc,i-0def`` (instances),
    ``orders:live=7`` (a Lambda alias and version).
    """
    if request is None:
        return ""
    t, p = request.target, request.params
    if "task_definition" in t:
        return t["task_definition"]
    if "unit" in t:
        return f"{t['unit']}@{t.get('host', '')}"
    if "group" in t:
        return f"{t['group']}={p.get('desired_capacity', '')}"
    if "function" in t:
        return f"{t['function']}:{t['alias']}={t['version']}"
    if "instance_ids" in p:
        return ",".join(sorted(p["instance_ids"]))
    return ",".join(f"{k}={v}" for k, v in sorted(t.items()))


# --- verification (deterministic: the workflow and the governor run it) -------------

def verify_ssh(data: bytes, armored: str, keys: list[str]) -> None:
    """Check an ``ssh-keygen -Y sign`` signature against the listed keys; ``Unproven`` if it fails."""
    allowed = []
    for key in keys:
        try:
            allowed.append(sshsig.PublicKey.from_openssh_str(key))
        except Exception:  # noqa: BLE001 - the loader refuses bad keys; an odd one never matches
            continue
    if not allowed:
        raise Unproven("no SSH key is listed for this person")
    try:
        sshsig.verify(data, armored, allowed, namespace=NAMESPACE)
    except sshsig.InvalidSignature as exc:
        raise Unproven(f"SSH signature not valid for a key listed for this person: {exc}") from None
    except (NotImplementedError, ValueError) as exc:
        raise Unproven(f"SSH signature unreadable: {exc}") from None


def verify_attestation(data: bytes, signature: str, keys: list[str]) -> None:
    """Check the ingress's Ed25519 signature (base64) against the listed attestation keys."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Unproven("attestation is not base64") from None
    for key in keys:
        try:
            public = serialization.load_ssh_public_key(key.encode())
        except (ValueError, TypeError):
            continue
        if not isinstance(public, Ed25519PublicKey):
            continue
        try:
            public.verify(raw, data)
            return
        except InvalidSignature:
            continue
    raise Unproven("attestation not signed by a key the whitelist lists under attestation_keys")


def check(statement_text: str, signature: str, *, keys: list[str], attestation_keys: list[str]) -> Statement:
    """Parse a statement and verify its signature for its channel; ``Unproven`` if it fails."""
    statement = parse(statement_text)
    data = canonical(statement)
    if statement_text.encode() != data:
        raise Unproven("statement is not in canonical form")
    if statement.channel == "ssh":
        verify_ssh(data, signature, keys)
    else:
        verify_attestation(data, signature, attestation_keys)
    return statement


# --- signing (outside workflows) ------------------------------------------------------

def sign_ssh(data: bytes, key_file: str) -> str:
    """Sign with ``ssh-keygen -Y sign``: a private key file, or a public key whose private
    half is in the ssh-agent."""
    result = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", key_file],
                            input=data, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise Unproven(f"ssh-keygen could not sign with {key_file}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def sign_attestation(data: bytes, private_key: Ed25519PrivateKey) -> str:
    return base64.b64encode(private_key.sign(data)).decode()


def load_attestation_key(path: str) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(open(path, "rb").read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the attestation key must be an Ed25519 key (ssh-keygen -t ed25519)")
    return key


def public_line(private_key: Ed25519PrivateKey, comment: str = "") -> str:
    line = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()
