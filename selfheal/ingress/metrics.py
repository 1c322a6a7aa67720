"""The ingress's metrics (``/metrics`` on the app, no authentication): alerts by source and
answer, requests by route and code, refusals by channel and reason. Label values come from
these fixed vocabularies, never from what a sender wrote."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.exposition import choose_encoder

from selfheal.metrics import WithoutCreated, new_registry

ALERT_SOURCES = ("alertmanager", "grafana", "generic", "sns")
# What the ingress answered, per alert: the delivery states (selfheal.ingress.delivery.Delivered),
# and the two answers that deliver nothing. A refused request (4xx) counts once, as how many
# alerts it held is unknown when it could not be read.
ANSWERS = ("delivered", "already delivered", "duplicate", "no open incident", "saturated", "rejected", "unavailable")
OTHER_ROUTE = "other"  # a path no route matches: never the raw path, which a sender chooses


class IngressMetrics:
    """The ingress's counters in a registry of its own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.alerts = Counter("selfheal_ingress_alerts", "alerts received, by source and what the ingress answered",
                              ["source", "answer"], registry=None)
        self.requests = Counter("selfheal_ingress_requests", "HTTP requests, by route and status code",
                                ["route", "code"], registry=None)
        self.refusals = Counter("selfheal_ingress_refusals", "approvals, rejections and Slack clicks the ingress "
                                "refused or the workflow did not count, by channel and reason", ["channel", "reason"],
                                registry=None)
        self.registry.register(WithoutCreated(self.alerts, self.requests, self.refusals))
        for source in ALERT_SOURCES:  # every series from the start, so rate() sees the first alert
            for answer in ANSWERS:
                self.alerts.labels(source, answer)
        for channel, reasons in self.REFUSALS.items():
            for reason in reasons:
                self.refusals.labels(channel, reason)

    # Why an approval through the ingress did not count. The ingress's own refusals:
    # bad_signature (Slack's signature missing, wrong or stale), malformed (an unreadable
    # request), replayed (seen before by this ingress, or refused as a replay by the
    # workflow), unmapped_user (a Slack user or workspace the whitelist maps to nobody),
    # no_token and unknown_token (a token naming nobody), malformed_key (a bad
    # Idempotency-Key), key_reused (a key counted for the other answer). And the
    # workflow's: refused (not allowed, wrong confirmation, ...), not_waiting,
    # unknown_incident.
    REFUSALS = {
        "slack": ("bad_signature", "malformed", "replayed", "unmapped_user", "refused", "not_waiting", "unknown_incident"),
        "token": ("no_token", "unknown_token", "malformed", "malformed_key", "replayed", "refused", "not_waiting",
                  "unknown_incident", "key_reused"),
    }

    def answered(self, source: str, answer: str, alerts: int = 1) -> None:
        # Never raises: the alerts were answered already. Answers are the code's own words
        # (a test keeps delivery's states within ANSWERS), never the sender's.
        self.alerts.labels(source, answer).inc(alerts)

    def refused(self, channel: str, reason: str) -> None:
        """An approval that did not count; ``reason`` is one of ``REFUSALS[channel]``, never the sender's words."""
        self.refusals.labels(channel, reason).inc()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format the scraper's Accept header asks for (Prometheus: OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def middleware(self, app):
        """ASGI middleware counting each HTTP request by its route's path template and status."""

        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            status = 500  # unless a response starts: an exception becomes the server's 500

            async def sending(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = scope.get("route")
                self.requests.labels(getattr(route, "path", None) or OTHER_ROUTE, str(status)).inc()

        return counted


