"""``POST /v1/slack/interactions``: button clicks and modal submissions from the Slack app.

Every request must carry Slack's signature (``X-Slack-Signature``, v0 HMAC of
``v0:timestamp:body`` with the app's signing secret, checked by slack-sdk's verifier),
with a timestamp within 5 minutes; a request seen before is a replay. Anything else is a
401 and nothing happens.

Who clicked is the signed payload's team and user id, mapped to a person by the
whitelist (``people.<name>.slack: ["TEAM:USER"]``), never a display name or a button
value. The ingress then attests the approval (``ingress/approvals.py``); the workflow
decides whether it counts.

Slack wants an answer within 3 seconds: the request is acknowledged at once, and the
work is done after, answering through the interaction's ``response_url``: the request
message is replaced with the decision, or, for a refusal, an ephemeral note goes to the
person who clicked while the request keeps waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import Response
from slack_sdk.signature import SignatureVerifier

from selfheal import attest
from selfheal.ingress.approvals import ApprovalError, Approver
from selfheal.slack import CONFIRM_CALLBACK, SlackApi, confirm_modal, decided_blocks

log = logging.getLogger("selfheal.ingress.slack")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
SEEN = 10_000  # signatures remembered against replays; older ones are past the 5-minute window anyway


class SlackProblem(Exception):
    def __init__(self, status: int, reason: str):
        self.status, self.reason = status, reason


class SlackInteractions:
    def __init__(self, signing_secret: str, approver: Approver, api: SlackApi):
        self._verifier = SignatureVerifier(signing_secret)
        self._approver = approver
        self._api = api
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def authenticate(self, headers, body: bytes) -> dict[str, Any]:
        """The interaction payload, once Slack's signature, its age and its novelty are checked."""
        timestamp, signature = headers.get("x-slack-request-timestamp", ""), headers.get("x-slack-signature", "")
        # Checked here first: the verifier's int() would raise on "²", and its decode on bad UTF-8.
        if not _TIMESTAMP.fullmatch(timestamp) or not signature:
            raise SlackProblem(401, "missing or malformed Slack signature headers")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SlackProblem(400, "body is not UTF-8") from None
        if not self._verifier.is_valid(text, timestamp, signature):
            raise SlackProblem(401, "Slack signature invalid, or its timestamp more than 5 minutes from now")
        if signature in self._seen:
            raise SlackProblem(401, "replayed: this signed request was seen before")
        self._seen[signature] = None
        while len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        try:
            payload = json.loads(parse_qs(text, strict_parsing=False).get("payload", [""])[0])
        except ValueError:
            raise SlackProblem(400, "no JSON payload field") from None
        if not isinstance(payload, dict):
            raise SlackProblem(400, "payload is not a JSON object")
        return payload

    def handle(self, payload: dict[str, Any]) -> None:
        """Do the work after the acknowledgement; keep the task referenced until it ends."""
        task = asyncio.ensure_future(self._safely(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the work in flight (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _safely(self, payload: dict[str, Any]) -> None:
        try:
            await self._work(payload)
        except Exception:  # noqa: BLE001 - after the acknowledgement nobody can hear an exception; log it
            log.exception("Slack interaction failed")

    async def _work(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        user, team = _dict(payload.get("user")), _dict(payload.get("team"))
        person = self._approver.whitelist.person_for_slack(str(team.get("id") or user.get("team_id") or ""), str(user.get("id") or ""))
        if kind == "block_actions":
            await self._clicked(payload, person)
        elif kind == "view_submission" and _dict(payload.get("view")).get("callback_id") == CONFIRM_CALLBACK:
            await self._confirmed(payload, person)

    async def _clicked(self, payload: dict[str, Any], person: str | None) -> None:
        actions = payload.get("actions") if isinstance(payload.get("actions"), list) else []
        action = _dict(actions[0]) if actions else {}
        action_id, incident = action.get("action_id"), str(action.get("value") or "")
        response_url = str(payload.get("response_url") or "")
        if action_id not in ("approve", "reject", "evidence") or not incident or not response_url:
            return
        if person is None:
            await self._ephemeral(response_url, "Your Slack user is not mapped to a person in the whitelist: nothing was recorded.")
            return
        if action_id == "evidence":
            await self._evidence(response_url, incident, person)
            return
        if action_id == "approve" and await self._needs_confirmation(incident):
            hint = "as shown in the request, for example checkout:41 or api.service@web-1"
            await self._api.open_modal(str(payload.get("trigger_id") or ""), confirm_modal(incident, response_url, hint))
            return
        note = "approved in Slack" if action_id == "approve" else "rejected in Slack"
        await self._decide(response_url, person, incident, action_id, note, None)

    async def _confirmed(self, payload: dict[str, Any], person: str | None) -> None:
        view = _dict(payload.get("view"))
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            return
        typed = _dict(_dict(_dict(_dict(view.get("state")).get("values")).get("confirm")).get("target")).get("value")
        incident, response_url = str(meta.get("incident") or ""), str(meta.get("response_url") or "")
        if not incident or not response_url:
            return
        if person is None:
            await self._ephemeral(response_url, "Your Slack user is not mapped to a person in the whitelist: nothing was recorded.")
            return
        await self._decide(response_url, person, incident, "approve", "approved in Slack", str(typed or ""))

    async def _decide(self, response_url: str, person: str, incident: str, action: str, note: str, confirm: str | None) -> None:
        try:
            result = await self._approver.send(person, "slack", incident, action, note, confirm)
        except ApprovalError as exc:
            await self._ephemeral(response_url, f"Not counted ({person}): {exc}")
            return
        text = f"{'Approved' if action == 'approve' else 'Rejected'} by {person} in Slack: {result}"
        await self._api.respond(response_url, {"replace_original": True, "text": text, "blocks": decided_blocks(incident, text)})

    async def _needs_confirmation(self, incident: str) -> bool:
        record = await self._approver.record(incident)
        tier = self._approver.whitelist.tiers.get(record.decision.tier or "") if record.decision else None
        return bool(tier and tier.confirm)

    async def _evidence(self, response_url: str, incident: str, person: str) -> None:
        try:
            record = await self._approver.record(incident)
        except ApprovalError as exc:
            await self._ephemeral(response_url, str(exc))
            return
        await self._approver.viewed(person, "slack", incident)
        lines = [record.diagnosis.rationale] if record.diagnosis else []
        for h in record.diagnosis.hypotheses[:5] if record.diagnosis else []:
            lines.append(f"• {h.summary}")
            lines += [f"    {line[:300]}" for ev in h.evidence for line in ev.lines[-5:]]
        target = attest.confirmation_text(record.request)
        await self._ephemeral(response_url, (f"Evidence for {incident} ({target}):\n" + "\n".join(lines))[:2900])

    async def _ephemeral(self, response_url: str, text: str) -> None:
        await self._api.respond(response_url, {"response_type": "ephemeral", "replace_original": False, "text": text[:2900]})


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def register(app: FastAPI, interactions: SlackInteractions | None, body_of) -> None:
    @app.post("/v1/slack/interactions", summary="Slack app interactivity: buttons and modals",
              responses={200: {}, 400: {}, 401: {}, 404: {}, 413: {}})
    async def slack_interactions(request: Request) -> Response:
        body = await body_of(request)
        if interactions is None:
            return Response(json.dumps({"error": "Slack is not configured on this ingress"}), status_code=404,
                            media_type="application/json")
        try:
            payload = interactions.authenticate(request.headers, body)
        except SlackProblem as exc:
            return Response(json.dumps({"error": exc.reason}), status_code=exc.status, media_type="application/json")
        interactions.handle(payload)
        return Response(status_code=200)  # acknowledged; the answer goes to response_url
