"""Tell people: approval requests, reminders, escalations and outcomes, as JSON to a webhook."""

from __future__ import annotations

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.models import Notification


class Notifier:
    def __init__(self, http: httpx.AsyncClient, url: str | None):
        self._http = http
        self._url = url

    @activity.defn(name="notify")
    @heartbeating
    async def notify(self, note: Notification) -> str:
        if not self._url:
            activity.logger.info("no notification webhook configured: %s %s", note.kind, note.summary)
            return "not sent: no webhook configured"
        try:
            response = await self._http.post(self._url, json=note.model_dump(mode="json"), timeout=10.0)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ApplicationError(f"webhook answered {response.status_code}", non_retryable=response.status_code < 500)
        return f"delivered ({response.status_code})"
