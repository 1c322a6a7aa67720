"""The Slack notifier: an approval request becomes a message with Approve, Reject and
Evidence buttons (``selfheal.slack``; the ingress answers the clicks), and the outcome
updates that message. It answers ``slack:CHANNEL:TS`` for the request, which the workflow
records and hands back with the outcome."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from selfheal.contract import Notification
from selfheal.slack import SlackApi, decided_blocks, request_blocks


class Slack:
    name = "slack"

    def __init__(self, slack: SlackApi, channel: str):
        self._slack, self._channel = slack, channel

    async def send(self, note: Notification) -> str:
        try:
            if note.kind == "approval_requested":
                posted = await self._slack.post(self._channel, note.summary, request_blocks(note.incident_id, note.details))
                try:  # for a page to link to; the message is posted either way
                    return f"slack:{posted} {await self._slack.permalink(posted)}"
                except Exception:  # noqa: BLE001 - a link is a convenience, and a retry would post again
                    return f"slack:{posted}"
            if note.kind == "outcome" and note.details.get("slack_message"):
                await self._slack.update(note.details["slack_message"], note.summary,
                                         decided_blocks(note.incident_id, note.summary))
                return "slack: request message updated"
        except Exception as exc:  # noqa: BLE001 - slack_sdk raises its own errors; retried like a webhook
            raise ApplicationError(f"Slack refused or did not answer: {type(exc).__name__}: {exc}"[:500]) from None
        return "slack: nothing to post"
