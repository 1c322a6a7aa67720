"""The approval rules the incident workflow's handlers apply, as plain functions.

Approvals arrive from outside (the CLI, the Temporal UI, ``temporal workflow update``), so
their payload is untrusted. The handlers take it raw and decode it here, leniently: a
payload that is not a valid approval (an empty name, a number, no object at all) must
still reach the handler, so that its refusal is recorded in the audit. Had the handler's
parameter been the strict model, the data converter would reject it before any workflow
code ran, and no trace of it would remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from selfheal.identity import attest
from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.contract.audit import UNMAPPED_SLACK
from selfheal.whitelist import Whitelist

MAX_SHOWN = 80  # characters of an untrusted approver name kept in a refusal record


def decode(raw: Any, model, who_field: str = "approver") -> tuple[Any, str, str | None]:
    """``(message, who, refusal)``: the decoded message, or None and why it is refused."""
    who = raw.get(who_field) if isinstance(raw, dict) else None
    who = who[:MAX_SHOWN] if isinstance(who, str) else ""
    try:
        return model.model_validate(raw), who, None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return None, who, f"malformed {model.__name__.lower()}: {where}: {first['msg']}"


def refusal(audit: AuditRecord, approved_by: list[str], who: str, rejecting: bool = False) -> str | None:
    """Why ``who`` may not approve (or reject) now, or None if they may."""
    decision = audit.decision
    if audit.status != "awaiting_approval" or decision is None:
        return f"incident is not waiting for approval (status: {audit.status})"
    if who not in decision.approvers:
        return f"{who!r} may not approve {decision.entry_id} (allowed: {', '.join(decision.approvers)})"
    if not rejecting and who in approved_by:
        return f"{who!r} already approved; {decision.approvals} distinct approver(s) are needed"
    return None


@dataclass(frozen=True)
class Judgement:
    """What an approval or rejection amounts to, and what the audit records of it."""

    counts: bool
    kind: str          # approved, rejected, refused, unverified
    channel: str       # ssh, slack, token, unverified
    verified: bool
    note: str          # the comment or reason given, or why it does not count
    origin: str | None = None  # the ingress request a counted, signed answer came from


def judge(message: Approval | Rejection, rejecting: bool, audit: AuditRecord, whitelist: Whitelist,
          approved_by: list[str], now: datetime, nonces: set[str], origins: set[str] | None = None) -> Judgement:
    """Whether a message counts: proven how, through which channel, by someone who may.

    Deterministic (``now`` is the workflow's), so it runs in the workflow with the keys
    of the whitelist snapshot in history. The proof is checked before the person's
    standing, so a replayed statement is named a replay; a statement that verifies has
    its nonce added to ``nonces``, and its origin (the ingress request it answered) to
    ``origins``.
    """
    who, counted = message.approver, "rejected" if rejecting else "approved"
    said = message.reason if rejecting else message.comment
    origins = set() if origins is None else origins
    if who.startswith(UNMAPPED_SLACK):
        # Reported by an ingress, unsigned: it proves nothing, and whatever else it says,
        # a name no person can have never counts.
        shown = f" (display name {said[:MAX_SHOWN]!r})" if said else ""
        return Judgement(False, "refused", "slack", False,
                         f"unmapped Slack user {who[len(UNMAPPED_SLACK):]}{shown}: no person in the whitelist has this "
                         "Slack id (people.<name>.slack), so it never counts")
    if audit.status != "awaiting_approval" or audit.decision is None:
        return Judgement(False, "refused", message.channel or "unverified", False,
                         f"incident is not waiting for approval (status: {audit.status})")
    tier = whitelist.tiers.get(audit.decision.tier or "")
    channels = tier.channels if tier else ["ssh", "slack", "token"]
    channel, verified = "unverified", False
    if message.signature:
        channel = message.channel or "unverified"
        if channel not in channels:
            return Judgement(False, "refused", channel, False, f"channel {channel!r} does not count for the "
                             f"{audit.decision.tier} tier (counted: {', '.join(channels)})")
        try:
            statement = attest.check(message.statement, message.signature, keys=whitelist.identity(who).ssh_keys,
                                     attestation_keys=whitelist.attestation_keys)
        except attest.Unproven as exc:
            return Judgement(False, "refused", channel, False, f"signature refused: {exc}")
        mismatch = _mismatch(statement, message, rejecting, audit, now, nonces, origins)
        if mismatch:
            return Judgement(False, "refused", channel, False, f"signature refused: {mismatch}")
        nonces.add(statement.nonce)
        if statement.origin is not None:
            origins.add(statement.origin)
        verified = True
    refused = refusal(audit, approved_by, who, rejecting)
    if refused:
        return Judgement(False, "refused", channel, verified, refused)
    if not verified:
        if "unverified" in channels:
            return Judgement(True, counted, "unverified", False, said)
        return Judgement(False, "unverified", "unverified", False,
                         f"unverified: a typed name proves nothing, so it does not count for the "
                         f"{audit.decision.tier} tier (counted: {', '.join(channels)}); sign it (selfheal approve) "
                         "or answer in Slack")
    if tier is not None and tier.confirm and not rejecting:
        expected = attest.confirmation_text(audit.request)
        if statement.confirm != expected:
            typed = "no confirmation" if statement.confirm is None else f"confirmation {statement.confirm!r}"
            return Judgement(False, "refused", channel, True,
                             f"the {audit.decision.tier} tier asks to confirm the target: {typed} is not {expected!r}")
    return Judgement(True, counted, channel, True, said, origin=statement.origin)


def _mismatch(statement: attest.Statement, message, rejecting: bool, audit: AuditRecord, now: datetime,
              nonces: set[str], origins: set[str]) -> str | None:
    """Why a genuine statement is not about this decision, now; None if it is."""
    expected = {
        "action": "reject" if rejecting else "approve",
        "subject": audit.incident_id,
        "entry": audit.decision.entry_id,
        "target": audit.request.target if audit.request else {},
        "decision": attest.decision_digest(audit.decision),
        "person": message.approver,
        "channel": message.channel,
    }
    for field, want in expected.items():
        got = getattr(statement, field)
        if got != want:
            what = "an earlier or other decision" if field == "decision" else repr(got)
            return f"signed for {field} {what}, not {want!r}" if field != "decision" else f"signed for {what}"
    if statement.expires <= now:
        return f"expired at {statement.expires.isoformat()}"
    if statement.nonce in nonces:
        return "replayed: this signed statement was already used"
    if statement.origin is not None and statement.origin in origins:
        # The same request attested again (another ingress, a retry): a fresh nonce, the same origin.
        if statement.origin.startswith("slack:"):
            return "replayed: this Slack action was already used"
        if statement.origin.startswith("token:"):
            return "replayed: this token request (the same Idempotency-Key) was already used"
        return "replayed: this request was already used"
    return None


def viewing_proven(message, audit: AuditRecord, whitelist: Whitelist, now: datetime) -> bool:
    """Whether an evidence view is proven to be the person's (a signed, current statement)."""
    if not message.signature:
        return False
    try:
        statement = attest.check(message.statement, message.signature, keys=whitelist.identity(message.person).ssh_keys,
                                 attestation_keys=whitelist.attestation_keys)
    except attest.Unproven:
        return False
    return (statement.action == "evidence" and statement.subject == audit.incident_id
            and statement.person == message.person and statement.channel == message.channel and statement.expires > now)
