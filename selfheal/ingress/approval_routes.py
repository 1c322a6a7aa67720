"""``POST /v1/approvals``: a person, proven by their token, approves or rejects an incident.

The ingress proves who is asking (the token, hashed in the whitelist) and attests for
them; the workflow decides whether it counts. Every refusal is logged and counted
(``approvals.refused``); a token naming nobody never reaches a workflow.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from selfheal.ingress.approvals import ApprovalError, Approver, Unavailable, reason_of, refused
from selfheal.ingress.intake import Intake, Problem, body_schema

# An approval's Idempotency-Key: a UUID, a ULID, base64 or a counter all fit.
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._~:+/=-]{1,128}")


class ApprovalPost(BaseModel):
    """``POST /v1/approvals``: a person, proven by their token, approves or rejects an incident."""

    model_config = ConfigDict(extra="forbid")

    incident: Annotated[str, Field(min_length=1, max_length=1000)]
    action: Literal["approve", "reject"]
    comment: Annotated[str, Field(max_length=2000)] = ""
    reason: Annotated[str, Field(max_length=2000)] = ""
    confirm: Annotated[str, Field(max_length=512)] | None = None


def register_approvals(app: FastAPI, intake: Intake, approver: Approver | None) -> None:
    body_of, parse, metrics = intake.body_of, intake.parse, intake.metrics

    @app.post("/v1/approvals", responses={200: {}, 401: {}, 403: {}, 404: {}, 409: {}, 422: {}, 503: {}},
              openapi_extra=body_schema(ApprovalPost), summary="Approve or reject an incident, as the person a token names")
    async def approvals(request: Request) -> JSONResponse:
        body = await body_of(request)
        if approver is None:
            raise Problem(404, "this ingress takes no approvals: set SELFHEAL_WHITELIST and SELFHEAL_INGRESS_ATTESTATION_KEY")
        client = request.client.host if request.client else "?"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        person = approver.person_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if person is None:
            # Never reaches a workflow: a token naming nobody proves nothing to record. Never logged either.
            named = scheme.lower() == "bearer" and token.strip()
            refused(metrics, "token", "unknown_token" if named else "no_token", f"401 to {client}")
            raise Problem(401, "missing or unknown approval token (the whitelist maps each person's token, hashed)")
        keys = request.headers.getlist("idempotency-key")
        if keys and (len(keys) > 1 or not IDEMPOTENCY_KEY.fullmatch(keys[0])):
            refused(metrics, "token", "malformed_key", f"400 to {person} at {client}")
            raise Problem(400, "Idempotency-Key must be one value of 1 to 128 characters from A-Z a-z 0-9 . _ ~ : + / = -")
        # The same key from the same person is the same request: the workflow counts it once.
        origin = f"token:{person}:{keys[0]}" if keys else None
        try:
            post = parse(ApprovalPost, body, request)
        except Problem as exc:
            refused(metrics, "token", "malformed", f"{exc.status} to {person} at {client}: {exc.reason}")
            raise
        note = post.comment if post.action == "approve" else post.reason
        try:
            result = await approver.send(person, "token", post.incident, post.action, note, post.confirm, origin=origin)
        except ApprovalError as exc:
            if not isinstance(exc, Unavailable):
                refused(metrics, "token", reason_of(exc), f"{person} on {post.incident}: {exc}")
            raise Problem(exc.status, str(exc)) from None
        return JSONResponse({"result": result, "person": person}, status_code=200)
