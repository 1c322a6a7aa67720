"""The ingress ASGI app: authenticate, validate, derive incident keys, deliver, answer.

Answers: 202 once Temporal has every alert of the request (with the incident ids and
their Temporal UI links); 400/401/413/415/422 with the reason for bad input, and then
nothing starts; 503 when Temporal did not take the alerts, so the sender retries and no
alert is lost. No policy lives here. ``GET /metrics`` (unauthenticated; off with
``SELFHEAL_INGRESS_METRICS=false``) counts alerts by source and answer, and requests.

The routes live by what they take: alerts (``alert_routes.py``), token approvals
(``approval_routes.py``), Slack's interactions (``slack.py``); what they share, reading
and checking a request, is ``intake.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from selfheal.ingress.alert_routes import register_alerts
from selfheal.ingress.approval_routes import register_approvals
from selfheal.ingress.approvals import Approver
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.intake import Intake, Problem
from selfheal.ingress.metrics import IngressMetrics
from selfheal.ingress.settings import IngressSettings
from selfheal.ingress.slack import SlackInteractions, register as register_slack
from selfheal.ingress.sns import SnsVerifier


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

    intake = Intake(settings, now, metrics)

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    register_alerts(app, intake, delivery, sns)
    register_approvals(app, intake, approver)
    register_slack(app, slack, intake.body_of)

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
