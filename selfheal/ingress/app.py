"""The ingress ASGI app: authenticate, validate, derive incident keys, deliver, answer.

Answers: 202 once Temporal has every alert of the request (with the incident ids and
their Temporal UI links); 400/401/413/415/422 with the reason for bad input, and then
nothing starts; 503 when Temporal did not take the alerts, so the sender retries and no
alert is lost. No policy lives here. ``GET /metrics`` (unauthenticated; off with
``SELFHEAL_INGRESS_METRICS=false``) counts alerts by source and answer, and requests.
"""

from __future__ import annotations

import asyncio
import functools
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.ingress import auth, parsers
from selfheal.ingress.approvals import ApprovalError, Approver, Unavailable, reason_of, refused
from selfheal.ingress.cloudwatch import parse_cloudwatch_alarm
from selfheal.ingress.decode import Undecodable, decode_json
from selfheal.ingress.delivery import Delivery, TemporalRefused, TemporalUnavailable
from selfheal.ingress.metrics import IngressMetrics
from selfheal.ingress.settings import IngressSettings
from selfheal.ingress.slack import SlackInteractions, register as register_slack
from selfheal.ingress.sns import SnsError, SnsUnavailable, SnsVerifier


class Problem(Exception):
    def __init__(self, status: int, reason: str, alerts: int = 1):
        # alerts: how many alerts the refusal answers, for /metrics (1 when they were not read)
        self.status, self.reason, self.alerts = status, reason, alerts


_LENGTH = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also admits "²"
# An approval's Idempotency-Key: a UUID, a ULID, base64 or a counter all fit.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._~:+/=-]{1,128}")


class Accepted(BaseModel):
    incidents: list[dict[str, Any]]


class ApprovalPost(BaseModel):
    """``POST /v1/approvals``: a person, proven by their token, approves or rejects an incident."""

    model_config = ConfigDict(extra="forbid")

    incident: Annotated[str, Field(min_length=1, max_length=1000)]
    action: Literal["approve", "reject"]
    comment: Annotated[str, Field(max_length=2000)] = ""
    reason: Annotated[str, Field(max_length=2000)] = ""
    confirm: Annotated[str, Field(max_length=512)] | None = None


def create_app(settings: IngressSettings, delivery: Delivery, sns: SnsVerifier | None = None,
               now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
               approver: Approver | None = None, slack: SlackInteractions | None = None,
               metrics: IngressMetrics | None = None) -> FastAPI:
    app = FastAPI(
        title="selfheal ingress",
        version="1",
        description="Alert webhooks in; one durable Temporal workflow per incident out.",
    )
    metrics = (metrics or IngressMetrics()) if settings.metrics else None
    app.state.metrics = metrics
    if slack is not None and slack.metrics is None:
        slack.metrics = metrics

    def answered(source: str, answer: str, alerts: int = 1) -> None:
        if metrics is not None:
            metrics.answered(source, answer, alerts)

    def counted(source: str):
        """An alert route whose refusals (4xx) are counted as ``rejected``."""

        def wrap(endpoint):
            @functools.wraps(endpoint)
            async def route(request: Request) -> JSONResponse:
                try:
                    return await endpoint(request)
                except Problem as exc:
                    answered(source, "rejected", exc.alerts)
                    raise

            return route

        return wrap

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and _LENGTH.fullmatch(length) and int(length) > settings.max_body_bytes:
            raise Problem(413, f"body of {length} bytes exceeds the {settings.max_body_bytes}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise Problem(413, f"body exceeds the {settings.max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(model: type[BaseModel], body: bytes, request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type and not (model is dict and "text/plain" in content_type):
            raise Problem(415, f"content-type must be application/json, got {content_type or 'none'!r}")
        try:
            data = decode_json(body)
        except Undecodable as exc:
            raise Problem(400, str(exc)) from None
        if model is dict:
            if not isinstance(data, dict):
                raise Problem(400, "body must be a JSON object")
            return data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise Problem(422, f"{where}: {first['msg']}{more}") from None

    def authenticate(source: str, request: Request, body: bytes) -> None:
        try:
            auth.check(source, settings.auth_for(source), request.headers, body, now().timestamp())
        except auth.Unauthorized as exc:
            raise Problem(401, str(exc)) from None

    async def accept(source: str, routed: list[parsers.Routed]) -> JSONResponse:
        by_episode: dict[tuple[str, str | None], list] = {}
        for r in routed:
            by_episode.setdefault((r.key, r.episode), []).append(r.alert)
        outcomes = await asyncio.gather(
            *(delivery.deliver(key, episode, alerts) for (key, episode), alerts in by_episode.items()),
            return_exceptions=True,
        )
        # Temporal unavailable for any of them: 503, and the sender's retry re-delivers all,
        # which is safe because delivery is idempotent per episode.
        for outcome in outcomes:
            if isinstance(outcome, TemporalUnavailable):
                answered(source, "unavailable", len(routed))
                return JSONResponse({"error": str(outcome), "retry": True}, status_code=503, headers={"Retry-After": "5"})
        for outcome in outcomes:
            if isinstance(outcome, TemporalRefused):
                raise Problem(422, str(outcome), alerts=len(routed))
            if isinstance(outcome, BaseException):
                raise outcome
        for r in outcomes:
            answered(source, r.state, r.alerts)
        incidents = [
            {"id": r.id, "alerts": r.alerts, "state": r.state, "url": settings.incident_url(r.id)} for r in outcomes
        ]
        return JSONResponse(Accepted(incidents=incidents).model_dump(), status_code=202)

    responses = {202: {"model": Accepted}, 401: {}, 413: {}, 422: {}, 503: {}}

    @app.post("/v1/alerts/alertmanager", status_code=202, responses=responses,
              openapi_extra=_body(parsers.AlertmanagerPayload), summary="Prometheus Alertmanager webhook (version 4)")
    @counted("alertmanager")
    async def alertmanager(request: Request) -> JSONResponse:
        body = await body_of(request)
        authenticate("alertmanager", request, body)
        payload = parse(parsers.AlertmanagerPayload, body, request)
        return await accept("alertmanager", parsers.from_alertmanager(payload, settings.alertmanager_key))

    @app.post("/v1/alerts/grafana", status_code=202, responses=responses,
              openapi_extra=_body(parsers.GrafanaPayload), summary="Grafana alerting webhook")
    @counted("grafana")
    async def grafana(request: Request) -> JSONResponse:
        body = await body_of(request)
        authenticate("grafana", request, body)
        return await accept("grafana", parsers.from_grafana(parse(parsers.GrafanaPayload, body, request)))

    @app.post("/v1/alerts/generic", status_code=202, responses=responses,
              openapi_extra=_body(parsers.GenericPayload), summary="selfheal's own alert shape")
    @counted("generic")
    async def generic(request: Request) -> JSONResponse:
        body = await body_of(request)
        authenticate("generic", request, body)
        return await accept("generic", parsers.from_generic(parse(parsers.GenericPayload, body, request), now()))

    @app.post("/v1/alerts/sns", status_code=202, responses=responses, summary="CloudWatch alarms via Amazon SNS (HTTP/S)")
    @counted("sns")
    async def sns_endpoint(request: Request) -> JSONResponse:
        body = await body_of(request)
        message = parse(dict, body, request)  # SNS posts JSON as text/plain
        if sns is None:
            raise Problem(401, "SNS is not configured on this ingress")
        kind = message.get("Type")
        try:
            if kind == "SubscriptionConfirmation":
                await sns.confirm_subscription(message, now())  # verifies the signature first
                return JSONResponse({"subscribed": message.get("TopicArn")}, status_code=200)
            await sns.verify(message, now())
        except SnsError as exc:
            raise Problem(401, str(exc)) from None
        except SnsUnavailable as exc:  # nothing wrong with the message: SNS retries only what got a 5xx
            answered("sns", "unavailable", 1)
            return JSONResponse({"error": exc.reason, "retry": True}, status_code=503, headers=exc.headers)
        if kind == "UnsubscribeConfirmation":
            return JSONResponse({"unsubscribed": message.get("TopicArn")}, status_code=200)
        try:
            fields = parse_cloudwatch_alarm(message)
        except SnsError as exc:
            raise Problem(422, str(exc)) from None
        if fields is None:
            return JSONResponse({"ignored": "alarm state INSUFFICIENT_DATA is not an alert"}, status_code=200)
        return await accept("sns", parsers.from_sns_alarm(fields))

    @app.post("/v1/approvals", responses={200: {}, 401: {}, 403: {}, 404: {}, 409: {}, 422: {}, 503: {}},
              openapi_extra=_body(ApprovalPost), summary="Approve or reject an incident, as the person a token names")
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
        if keys and (len(keys) > 1 or not _IDEMPOTENCY_KEY.fullmatch(keys[0])):
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

    register_slack(app, slack, body_of)

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if metrics is not None:
        app.add_middleware(metrics.middleware)

        @app.get("/metrics", summary="Prometheus metrics (no authentication: counts only, no alert text)",
                 response_class=Response)
        async def metrics_endpoint(request: Request) -> Response:
            body, content_type = metrics.exposition(request.headers.get("accept"))
            return Response(body, media_type=content_type)

    return app


def _body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
