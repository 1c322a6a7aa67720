"""The alert routes: Alertmanager, Grafana, selfheal's own shape, and CloudWatch alarms via
SNS. Each reads and checks its request (``Intake``), turns it into alerts with their
incident keys (``parsers``), and delivers them; 202 once Temporal has every one of them,
503 when it did not take them all (the sender retries; delivery is idempotent)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from selfheal.ingress import parsers
from selfheal.ingress.cloudwatch import parse_cloudwatch_alarm
from selfheal.ingress.delivery import Delivery, TemporalRefused, TemporalUnavailable
from selfheal.ingress.intake import Accepted, Intake, Problem, body_schema
from selfheal.ingress.sns import SnsError, SnsUnavailable, SnsVerifier


def register_alerts(app: FastAPI, intake: Intake, delivery: Delivery, sns: SnsVerifier | None) -> None:
    settings, now, answered = intake.settings, intake.now, intake.answered
    body_of, parse, authenticate, counted = intake.body_of, intake.parse, intake.authenticate, intake.counted

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
            # No link where there is no incident to open (resolved alerts with nothing to resolve).
            {"id": r.id, "alerts": r.alerts, "state": r.state,
             "url": None if r.state == "no open incident" else settings.incident_url(r.id)} for r in outcomes
        ]
        return JSONResponse(Accepted(incidents=incidents).model_dump(), status_code=202)

    responses = {202: {"model": Accepted}, 401: {}, 413: {}, 422: {}, 503: {}}

    @app.post("/v1/alerts/alertmanager", status_code=202, responses=responses,
              openapi_extra=body_schema(parsers.AlertmanagerPayload), summary="Prometheus Alertmanager webhook (version 4)")
    @counted("alertmanager")
    async def alertmanager(request: Request) -> JSONResponse:
        body = await body_of(request)
        authenticate("alertmanager", request, body)
        payload = parse(parsers.AlertmanagerPayload, body, request)
        return await accept("alertmanager", parsers.from_alertmanager(payload, settings.alertmanager_key))

    @app.post("/v1/alerts/grafana", status_code=202, responses=responses,
              openapi_extra=body_schema(parsers.GrafanaPayload), summary="Grafana alerting webhook")
    @counted("grafana")
    async def grafana(request: Request) -> JSONResponse:
        body = await body_of(request)
        authenticate("grafana", request, body)
        return await accept("grafana", parsers.from_grafana(parse(parsers.GrafanaPayload, body, request)))

    @app.post("/v1/alerts/generic", status_code=202, responses=responses,
              openapi_extra=body_schema(parsers.GenericPayload), summary="selfheal's own alert shape")
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
