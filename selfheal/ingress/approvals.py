"""Approvals that arrive at the ingress: the person is proven here, the workflow checks our word.

A channel the ingress can authenticate (a per-person token, a Slack request signed by
Slack) names a person; the ingress then signs a statement about the incident's current
decision with its own Ed25519 key (``selfheal.identity.attest``), and sends it as the workflow's
``approve`` or ``reject`` update. The workflow counts it only if the signature is by a
key the whitelist lists under ``attestation_keys``, and only for a person the entry
allows, through a channel the tier counts. Who may decide is the workflow's rule, not
this module's: it only proves who is asking.

Refusals are recorded wherever they happen. What reaches the workflow lands in its audit
(an unmapped Slack user too: ``unmapped``, signalled unsigned, so it never counts); what
the ingress turns away itself (a bad signature, a token naming nobody, a replay it saw)
never reaches a workflow. Every one is logged (WARNING, never a secret) and counted in
``selfheal_ingress_refusals_total{channel, reason}`` (``refused``).

Errors, each meant for an HTTP answer::

    ApprovalError
    ├── UnknownIncident   404: no such incident
    ├── NotWaiting        409: the incident is not waiting for approval
    ├── ApprovalRefused   403: the workflow refused it (the reason is the workflow's)
    ├── KeyReused         422: this Idempotency-Key was counted for another answer
    └── Unavailable       503: Temporal did not answer
"""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from selfheal.connection import QUERY_TIMEOUT
from selfheal.contract import Approval, AuditRecord, Rejection, Viewing
from selfheal.contract.audit import UNMAPPED_SLACK
from selfheal.contract.workflows import Incident
from selfheal.identity import attest
from selfheal.ingress.metrics import IngressMetrics
from selfheal.whitelist.models import Whitelist

log = logging.getLogger("selfheal.ingress.approvals")


class ApprovalError(Exception):
    status = 400


class UnknownIncident(ApprovalError):
    status = 404


class NotWaiting(ApprovalError):
    status = 409


class ApprovalRefused(ApprovalError):
    status = 403


class KeyReused(ApprovalError):
    status = 422


class Unavailable(ApprovalError):
    status = 503


def answered_before(record: AuditRecord, origin: str | None, action: Literal["approve", "reject"]) -> str | None:
    """The answer to a token request retried with its Idempotency-Key, if its first try counted.

    A client that lost the first answer (a timeout, a dropped connection) retries with the
    same key; it is owed the first answer, not a refusal, and the workflow counts nothing
    twice (it refuses a second statement of the same origin). A Slack action is not
    answered this way: Slack does not retry a click, so a second one goes to the workflow,
    which refuses it and records the refusal.
    """
    if origin is None or not origin.startswith("token:"):
        return None
    for event in record.approvals:
        if event.origin == origin and event.kind in ("approved", "rejected"):
            if event.kind != ("approved" if action == "approve" else "rejected"):
                what = "approval" if event.kind == "approved" else "rejection"
                raise KeyReused(f"this Idempotency-Key was counted for the {what} of {record.incident_id} "
                                f"by {event.approver} at {event.at.isoformat()}; a different answer needs a key of its own")
            return f"{event.kind} by {event.approver} at {event.at.isoformat()} (this Idempotency-Key, counted once)"
    return None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refused(metrics: IngressMetrics | None, channel: str, reason: str, detail: str) -> None:
    """Log (WARNING) and count a refusal. ``detail`` names ids and reasons, never a secret."""
    log.warning("%s approval refused (%s): %s", channel, reason, detail)
    if metrics is not None:
        metrics.refused(channel, reason)


def reason_of(exc: ApprovalError) -> str:
    """The metric's reason for an approval the workflow (or Temporal) did not take."""
    if isinstance(exc, ApprovalRefused):
        return "replayed" if "replayed:" in str(exc) else "refused"
    return {NotWaiting: "not_waiting", UnknownIncident: "unknown_incident", KeyReused: "key_reused"}.get(type(exc), "refused")


class Approver:
    """Sends proven approvals and rejections to incidents on behalf of the people it authenticated."""

    def __init__(self, client: Client, whitelist: Whitelist, key: Ed25519PrivateKey):
        self._client = client
        self.whitelist = whitelist
        self._key = key

    def person_for_token(self, token: str) -> str | None:
        return self.whitelist.person_for_token_hash(token_hash(token)) if token else None

    async def record(self, incident_id: str) -> AuditRecord:
        try:
            return await self._client.get_workflow_handle(incident_id).query(Incident.AUDIT, result_type=AuditRecord,
                                                                             rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise UnknownIncident(f"no incident {incident_id!r}") from None
            raise Unavailable(f"Temporal did not answer within {QUERY_TIMEOUT.seconds} s (is a worker running?): "
                              f"{exc.message}") from None

    async def send(self, person: str, channel: Literal["slack", "token"], incident_id: str,
                   action: Literal["approve", "reject"], note: str = "", confirm: str | None = None,
                   origin: str | None = None) -> str:
        """Sign a statement for ``person`` about the incident's current decision, and send it.

        ``origin`` names the request being answered (``attest.Statement.origin``): the
        workflow counts a request once, whichever ingress attests it and however often.
        """
        record = await self.record(incident_id)
        if (earlier := answered_before(record, origin, action)) is not None:
            return earlier
        if record.status != "awaiting_approval" or record.decision is None or record.request is None:
            raise NotWaiting(f"{incident_id} is not waiting for approval (status: {record.status})")
        statement = attest.new_statement(
            action=action, subject=incident_id, entry=record.decision.entry_id, target=record.request.target,
            decision=attest.decision_digest(record.decision), person=person, channel=channel, confirm=confirm,
            origin=origin)
        data = statement.canonical()
        proof = {"channel": channel, "statement": data.decode(), "signature": attest.sign_attestation(data, self._key)}
        message = (Approval(approver=person, comment=note, confirm=confirm, **proof) if action == "approve"
                   else Rejection(approver=person, reason=note, **proof))
        try:
            return await self._client.get_workflow_handle(incident_id).execute_update(
                Incident.APPROVE if action == "approve" else Incident.REJECT, message, result_type=str)
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            if "replayed:" in reason and (earlier := answered_before(await self.record(incident_id), origin, action)):
                return earlier  # the first try counted while this one was on its way (the refusal is recorded)
            raise (NotWaiting if "is not waiting for approval" in reason else ApprovalRefused)(reason) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownIncident(f"no incident {incident_id!r}") from None
            if exc.status == RPCStatusCode.FAILED_PRECONDITION or "not waiting" in exc.message:
                raise NotWaiting(exc.message) from None
            raise Unavailable(f"Temporal did not answer: {exc.message}") from None

    async def viewed(self, person: str, channel: Literal["slack", "token"], incident_id: str) -> None:
        """Tell the incident that ``person`` opened its evidence (an attested statement)."""
        statement = attest.new_statement(action="evidence", subject=incident_id, person=person, channel=channel)
        data = statement.canonical()
        viewing = Viewing(person=person, channel=channel, statement=data.decode(),
                          signature=attest.sign_attestation(data, self._key))
        try:
            await self._client.get_workflow_handle(incident_id).signal(Incident.EVIDENCE_VIEWED, viewing)
        except RPCError as exc:  # the evidence was still shown; only the record of the view is missing
            raise Unavailable(f"Temporal did not take the evidence view: {exc.message}") from None

    async def unmapped(self, slack_id: str, display: str, incident_id: str, action: Literal["approve", "reject"]) -> None:
        """Record on the incident that a Slack user the whitelist maps to nobody answered.

        Sent as the workflow's signal, unsigned, under the name ``slack:TEAM:USER``, which
        no person can have: the workflow records it as refused and it never counts. The
        display name goes along as the comment, for the people who review the incident.
        """
        name = f"{UNMAPPED_SLACK}{slack_id}"[:80]
        message = (Approval(approver=name, channel="slack", comment=display) if action == "approve"
                   else Rejection(approver=name, channel="slack", reason=display))
        try:
            await self._client.get_workflow_handle(incident_id).signal(Incident.APPROVE_SIGNAL if action == "approve" else Incident.REJECT_SIGNAL, message)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownIncident(f"no incident {incident_id!r}") from None
            raise Unavailable(f"Temporal did not take the refusal: {exc.message}") from None
