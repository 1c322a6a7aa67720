"""Tell people: approval requests, reminders, escalations and outcomes.

As JSON to a webhook, and to Slack when configured: an approval request becomes a
message with Approve, Reject and Evidence buttons (``selfheal.slack``), and the outcome
updates that message. The activity returns what it did, including the Slack message it
posted (``slack:CHANNEL:TS``), which the workflow records and hands back with the outcome.
"""

from __future__ import annotations

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.contract import Notification
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.redact import DEFAULT, Redactor
from selfheal.slack import SlackApi, decided_blocks, request_blocks


class Notifier:
    def __init__(self, http: httpx.AsyncClient, url: str | None, slack: SlackApi | None = None, channel: str | None = None,
                 redactor: Redactor = DEFAULT):
        self._redact = redactor
        self._http = http
        self._url = url
        self._slack = slack if channel else None
        self._channel = channel

    @implements(declared.notify)
    @heartbeating
    async def notify(self, note: Notification) -> str:
        # Leaving the machine: redact once more, whatever the workflow put in (alert
        # annotations, a rationale quoting a log line, an error message).
        note = note.model_copy(update={"summary": self._redact.text(note.summary),
                                       "details": {k: self._redact.text(v) for k, v in note.details.items()}})
        said = [await self._webhook(note)]
        if self._slack is not None:
            said.append(await self._to_slack(note))
        return "; ".join(s for s in said if s)

    async def _webhook(self, note: Notification) -> str:
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

    async def _to_slack(self, note: Notification) -> str:
        try:
            if note.kind == "approval_requested":
                posted = await self._slack.post(self._channel, note.summary, request_blocks(note.incident_id, note.details))
                return f"slack:{posted}"
            if note.kind == "outcome" and note.details.get("slack_message"):
                await self._slack.update(note.details["slack_message"], note.summary,
                                         decided_blocks(note.incident_id, note.summary))
                return "slack: request message updated"
        except Exception as exc:  # noqa: BLE001 - slack_sdk raises its own errors; retried like a webhook
            raise ApplicationError(f"Slack refused or did not answer: {type(exc).__name__}: {exc}"[:500]) from None
        return ""
