"""Slack: approval requests as messages with buttons, and the answers to clicks.

The Web API is called with slack-sdk's ``WebClient`` (in a thread: its async client
needs aiohttp), pointed at ``base_url`` so tests can use a local server that speaks the
same wire format. Replies to a click go to the interaction's ``response_url``.

Nothing here decides anything: the message shows what the workflow decided, and the
buttons carry only the incident id. Who clicked comes from Slack's signed payload (team
and user id), never from a button value or a display name (see ``ingress/slack.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from slack_sdk import WebClient

CONFIRM_CALLBACK = "selfheal_confirm"


class SlackApi:
    def __init__(self, token: str, base_url: str = "https://slack.com/api/", http: httpx.AsyncClient | None = None):
        self._web = WebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/")
        self._http = http

    async def post(self, channel: str, text: str, blocks: list[dict]) -> str:
        """Post a message; return ``CHANNEL:TS`` to update it later."""
        answer = await asyncio.to_thread(self._web.chat_postMessage, channel=channel, text=text, blocks=blocks)
        return f"{answer['channel']}:{answer['ts']}"

    async def permalink(self, message: str) -> str:
        """A link to the message (``CHANNEL:TS``) a person can open."""
        channel, _, ts = message.partition(":")
        answer = await asyncio.to_thread(self._web.chat_getPermalink, channel=channel, message_ts=ts)
        return answer["permalink"]

    async def update(self, message: str, text: str, blocks: list[dict]) -> None:
        channel, _, ts = message.partition(":")
        await asyncio.to_thread(self._web.chat_update, channel=channel, ts=ts, text=text, blocks=blocks)

    async def open_modal(self, trigger_id: str, view: dict) -> None:
        await asyncio.to_thread(self._web.views_open, trigger_id=trigger_id, view=view)

    async def respond(self, response_url: str, body: dict) -> None:
        """Answer a click through its response_url (ephemeral, or replacing the message)."""
        if self._http is None:
            async with httpx.AsyncClient() as http:
                await http.post(response_url, json=body, timeout=10)
        else:
            await self._http.post(response_url, json=body, timeout=10)


def _text(value: str, limit: int = 2900) -> str:
    # Slack refuses a section over 3,000 characters; untrusted text must not make the
    # request fail.
    return value if len(value) <= limit else value[: limit - 1] + "…"


def request_blocks(incident_id: str, details: dict[str, str]) -> list[dict]:
    """The approval request: evidence, the exact action and target, the tier and why, who may approve."""
    fields = [
        ("Action", details.get("action", "")),
        ("Target", details.get("target", "")),
        ("Parameters", details.get("params", "") or "none"),
        ("Tier", details.get("tier", "")),
        ("Who may approve", details.get("approvers", "")),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _text(f"Approval needed: {details.get('entry', '')}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*Incident* `{incident_id}`\n{details.get('summary', '')}")}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _text(f"*{k}*\n{v}", 1900)} for k, v in fields]},
    ]
    if details.get("raised_by"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*Why this tier*\n{details['raised_by']}")}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*Evidence*\n{details.get('evidence', '') or 'none'}")}})
    blocks.append({"type": "actions", "block_id": "selfheal", "elements": [
        {"type": "button", "action_id": "approve", "style": "primary", "value": incident_id,
         "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "action_id": "reject", "style": "danger", "value": incident_id,
         "text": {"type": "plain_text", "text": "Reject"}},
        {"type": "button", "action_id": "evidence", "value": incident_id, "text": {"type": "plain_text", "text": "Evidence"}},
    ]})
    return blocks


def decided_blocks(incident_id: str, text: str) -> list[dict]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": _text(f"*Incident* `{incident_id}`\n{text}")}}]


def confirm_modal(incident_id: str, response_url: str, expected_hint: str) -> dict:
    """The modal where the approver types the target again, for tiers that ask it."""
    return {
        "type": "modal",
        "callback_id": CONFIRM_CALLBACK,
        "private_metadata": json.dumps({"incident": incident_id, "response_url": response_url}),
        "title": {"type": "plain_text", "text": "Confirm the target"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "blocks": [{
            "type": "input", "block_id": "confirm",
            "label": {"type": "plain_text", "text": _text(f"Type the exact target to approve ({expected_hint})", 150)},
            "element": {"type": "plain_text_input", "action_id": "target"},
        }],
    }
