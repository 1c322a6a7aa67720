"""Tell people: the notifiers, and the one small interface they share.

A notifier has a ``name`` (its key in ``selfheal.contract.activities.NOTIFIERS``, which
names its activity and says which notifications it hears) and ``send(note) -> str``,
which delivers one notification and says what it did. ``activity_of`` makes it an
activity: it redacts the notification once more before it leaves the machine, heartbeats,
and registers under the declared name. A failure a retry can fix raises a retryable
``ApplicationError`` (``retry_after`` honours what the service asked for); one it cannot
(a 400: a bad routing key, a malformed event) raises a non-retryable one, which the
workflow records and counts. Adding a notifier: docs/development/notifiers.md.

Here: the webhook (JSON to SELFHEAL_NOTIFY_URL). Slack: ``notify_slack``; PagerDuty:
``notify_pagerduty``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable, Protocol

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.contract import Notification
from selfheal.contract.activities import NOTIFIERS, implements
from selfheal.evidence.redact import DEFAULT, Redactor

RETRY_AFTER_MAX = timedelta(minutes=5)  # a service asking for longer is asked again then


class Notifier(Protocol):
    name: str

    async def send(self, note: Notification) -> str: ...


def activity_of(notifier: Notifier, redactor: Redactor = DEFAULT) -> Callable:
    """``notifier`` as the activity its name declares."""

    @implements(NOTIFIERS[notifier.name])
    @heartbeating
    async def send(note: Notification) -> str:
        # Leaving the machine: redact once more, whatever the workflow put in (alert
        # annotations, a rationale quoting a log line, an error message).
        note = note.model_copy(update={"summary": redactor.text(note.summary),
                                       "details": {k: redactor.text(v) for k, v in note.details.items()}})
        return await notifier.send(note)

    return send


def refused(service: str, response: httpx.Response, why: str = "") -> ApplicationError:
    """What a notifier raises for an HTTP answer other than success: retried for a 429 or a
    5xx (after the Retry-After the service sent, when it sent one), never for another 4xx."""
    status = response.status_code
    retry = status == 429 or status >= 500
    delay = _retry_after(response.headers.get("retry-after")) if retry else None
    return ApplicationError(f"{service} answered {status}{': ' + why if why else ''}"[:500], type=f"{service}{status}",
                            non_retryable=not retry, next_retry_delay=delay)


def _retry_after(value: str | None) -> timedelta | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:  # an HTTP date: the activity's own backoff is close enough
        return None
    return None if seconds is None or seconds < 0 else min(timedelta(seconds=seconds), RETRY_AFTER_MAX)


class Webhook:
    name = "webhook"

    def __init__(self, http: httpx.AsyncClient, url: str | None):
        self._http, self._url = http, url

    async def send(self, note: Notification) -> str:
        if not self._url:
            activity.logger.info("no notification webhook configured: %s %s", note.kind, note.summary)
            return "not sent: no webhook configured"
        try:
            response = await self._http.post(self._url, json=note.model_dump(mode="json", exclude={"page"}), timeout=10.0)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise refused("webhook", response)
        return f"delivered ({response.status_code})"
