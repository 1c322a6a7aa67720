"""Serve the ingress with uvicorn: connect to Temporal lazily, so alerts that arrive while
Temporal is down get a 503 (and are retried by their sender) instead of a dead port."""

from __future__ import annotations

import logging

from typing import Any, Mapping

import httpx
import uvicorn
from temporalio.service import RetryConfig

from selfheal import connection, search
from selfheal.identity.attest import load_attestation_key
from selfheal.ingress.app import create_app
from selfheal.ingress.approvals import Approver
from selfheal.ingress.slack import SlackInteractions
from selfheal.slack import SlackApi
from selfheal.whitelist import load_whitelist
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from selfheal.ingress.sns import DEFAULT_CERT_URL_PATTERN, DEFAULT_SUBSCRIBE_URL_PATTERN, SnsVerifier

log = logging.getLogger("selfheal.ingress")
# The SDK retries an unreachable server for up to 10 s by default; the ingress would rather
# answer 503 within its delivery deadline (5 s) and let the sender retry.
RETRY = RetryConfig(initial_interval_millis=100, max_interval_millis=1000, max_elapsed_time_millis=3000, max_retries=10)


async def build(settings: IngressSettings, temporal: str | Mapping[str, Any], task_queue: str, http: httpx.AsyncClient):
    """The app, on a lazy client: ``temporal`` is an address (plain), or the keyword arguments
    ``selfheal.connection.connect_config`` made (TLS, API key, profile)."""
    config = connection.from_address(temporal, settings.namespace) if isinstance(temporal, str) else temporal
    client = await connection.connect(config, lazy=True, retry_config=RETRY)
    try:
        attributes = await search.available(client, settings.namespace)
    except Exception as exc:  # Temporal down at start: serve anyway, answer 503 until it is back
        log.warning("Temporal not reachable at start (%s); search attributes left unset", exc)
        attributes = False
    sns = SnsVerifier(
        http,
        cert_url_pattern=settings.sns_cert_url_pattern or DEFAULT_CERT_URL_PATTERN,
        subscribe_url_pattern=settings.sns_subscribe_url_pattern or DEFAULT_SUBSCRIBE_URL_PATTERN,
        cert_dir=settings.sns_cert_dir,
        allowed_topics=settings.sns_topics or None,
    )
    approver = None
    if settings.whitelist and settings.attestation_key:
        # Refuse to start on a bad whitelist or key, as the worker does: better than
        # answering every approval with a refusal.
        approver = Approver(client, load_whitelist(settings.whitelist).whitelist, load_attestation_key(settings.attestation_key))
    slack = None
    if approver is not None and settings.slack_signing_secret and settings.slack_token:
        slack = SlackInteractions(settings.slack_signing_secret, approver,
                                  SlackApi(settings.slack_token, settings.slack_api_url, http))
    return create_app(settings, Delivery(client, task_queue, attributes), sns, approver=approver, slack=slack)


def server(app, host: str, port: int) -> uvicorn.Server:
    # uvicorn's own signal handling is off: the caller decides when everything stops.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return srv
