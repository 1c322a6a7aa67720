"""The approval rules the incident workflow's handlers apply, as plain functions.

Approvals arrive from outside (the CLI, the Temporal UI, ``temporal workflow update``), so
their payload is untrusted. The handlers take it raw and decode it here, leniently: a
payload that is not a valid approval (an empty name, a number, no object at all) must
still reach the handler, so that its refusal is recorded in the audit. Had the handler's
parameter been the strict model, the data converter would reject it before any workflow
code ran, and no trace of it would remain.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from selfheal.models import Approval, AuditRecord, Rejection

MAX_SHOWN = 80  # characters of an untrusted approver name kept in a refusal record


def decode(raw: Any, model: type[Approval] | type[Rejection]) -> tuple[Approval | Rejection | None, str, str | None]:
    """``(message, who, refusal)``: the decoded message, or None and why it is refused."""
    who = raw.get("approver") if isinstance(raw, dict) else None
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
