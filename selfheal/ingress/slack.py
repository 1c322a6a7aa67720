"""``POST /v1/slack/interactions``: button clicks and modal submissions from the Slack app.

Every request must carry Slack's signature (``X-Slack-Signature``, v0 HMAC of
``v0:timestamp:body`` with the app's signing secret, checked by slack-sdk's verifier),
with a timestamp within 5 minutes; a request this ingress saw before is a replay. Anything
else is a 401, logged and counted, and nothing reaches a workflow.

Who clicked is the signed payload's team and user id, mapped to a person by the
whitelist (``people.<name>.slack: ["TEAM:USER"]``), never a display name or a button
value. The ingress then attests the approval (``ingress/approvals.py``), binding the
request itself into the statement (its ``origin``: the timestamp and a hash of Slack's
signature, which covers the body): the workflow counts a click once, even if the same
signed request reaches a second ingress, whose memory of replays is its own.

A user or workspace the whitelist maps to nobody is told so privately, and the click is
recorded in the incident's audit as refused, under ``slack:TEAM:USER`` with the display
name as given (``Approver.unmapped``), logged and counted. At most
``MAX_FORWARDED_REFUSALS`` of them per Slack user and incident go to the workflow from one
process; the rest are only logged and counted, so clicks cannot fill an incident's history.

Slack wants an answer within 3 seconds: the request is acknowledged at once, and the
work is done after, answering through the interaction's ``response_url``: the request
message is replaced with the decision, or, for a refusal, an ephemeral note goes to the
person who clicked while the request keeps waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import Response
from slack_sdk.signature import SignatureVerifier

from selfheal.identity import attest
from selfheal.ingress.approvals import ApprovalError, Approver, Unavailable, reason_of, refused
from selfheal.ingress.metrics import IngressMetrics
from selfheal.slack import CONFIRM_CALLBACK, SlackApi, confirm_modal, decided_blocks

log = logging.getLogger("selfheal.ingress.slack")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
SEEN = 10_000  # signatures remembered against replays; older ones are past the 5-minute window anyway
MAX_FORWARDED_REFUSALS = 5  # unmapped clicks per (Slack user, incident) this process sends to the workflow
SHOWN = 40  # characters of a Slack display name kept, as given
_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class SlackProblem(Exception):
    def __init__(self, status: int, reason: str, metric: str):
        self.status, self.reason, self.metric = status, reason, metric  # metric: IngressMetrics.REFUSALS["slack"]


class SlackInteractions:
    def __init__(self, signing_secret: str, approver: Approver, api: SlackApi):
        self._verifier = SignatureVerifier(signing_secret)
        self._approver = approver
        self._api = api
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._forwarded: OrderedDict[tuple[str, str], int] = OrderedDict()  # unmapped refusals sent, per (user, incident)
        self._tasks: set[asyncio.Task] = set()
        self.metrics: IngressMetrics | None = None  # the app's, set by create_app

    def authenticate(self, headers, body: bytes) -> tuple[dict[str, Any], str]:
        """The interaction payload and its origin, once Slack's signature, its age and its novelty are checked.

        The origin names this very request, for the attested statement: the workflow
        refuses a second statement with the same origin, whichever ingress sends it.
        """
        timestamp, signature = headers.get("x-slack-request-timestamp", ""), headers.get("x-slack-signature", "")
        # Checked here first: the verifier's int() would raise on "²", and its decode on bad UTF-8.
        if not _TIMESTAMP.fullmatch(timestamp) or not signature:
            raise SlackProblem(401, "missing or malformed Slack signature headers", "bad_signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SlackProblem(400, "body is not UTF-8", "malformed") from None
        if not self._verifier.is_valid(text, timestamp, signature):
            raise SlackProblem(401, "Slack signature invalid, or its timestamp more than 5 minutes from now", "bad_signature")
        # This process's memory answers a replay early; the statement's origin makes the
        # workflow refuse one that reaches another ingress.
        if signature in self._seen:
            raise SlackProblem(401, "replayed: this signed request was seen before", "replayed")
        self._seen[signature] = None
        while len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        try:
            payload = json.loads(parse_qs(text, strict_parsing=False).get("payload", [""])[0])
        except ValueError:
            raise SlackProblem(400, "no JSON payload field", "malformed") from None
        if not isinstance(payload, dict):
            raise SlackProblem(400, "payload is not a JSON object", "malformed")
        return payload, f"slack:{timestamp}:{hashlib.sha256(signature.encode()).hexdigest()[:32]}"

    def handle(self, payload: dict[str, Any], origin: str | None = None) -> None:
        """Do the work after the acknowledgement; keep the task referenced until it ends."""
        task = asyncio.ensure_future(self._safely(payload, origin))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the work in flight (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _safely(self, payload: dict[str, Any], origin: str | None) -> None:
        try:
            await self._work(payload, origin)
        except Exception:  # noqa: BLE001 - after the acknowledgement nobody can hear an exception; log it
            log.exception("Slack interaction failed")

    async def _work(self, payload: dict[str, Any], origin: str | None) -> None:
        kind = payload.get("type")
        user, team = _dict(payload.get("user")), _dict(payload.get("team"))
        team_id, user_id = str(team.get("id") or user.get("team_id") or ""), str(user.get("id") or "")
        person = self._approver.whitelist.person_for_slack(team_id, user_id)
        who = Clicker(person, f"{_slack_id(team_id)}:{_slack_id(user_id)}", _shown(user.get("username") or user.get("name")))
        if kind == "block_actions":
            await self._clicked(payload, who, origin)
        elif kind == "view_submission" and _dict(payload.get("view")).get("callback_id") == CONFIRM_CALLBACK:
            await self._confirmed(payload, who, origin)

    async def _clicked(self, payload: dict[str, Any], who: Clicker, origin: str | None) -> None:
        actions = payload.get("actions") if isinstance(payload.get("actions"), list) else []
        action = _dict(actions[0]) if actions else {}
        action_id, incident = action.get("action_id"), str(action.get("value") or "")
        response_url = str(payload.get("response_url") or "")
        if action_id not in ("approve", "reject", "evidence") or not incident or not response_url:
            return
        person = who.person
        if person is None:
            await self._unmapped(who, incident, action_id, response_url)
            return
        if action_id == "evidence":
            await self._evidence(response_url, incident, person)
            return
        if action_id == "approve" and await self._needs_confirmation(incident):
            hint = "as shown in the request, for example checkout:41 or api.service@web-1"
            await self._api.open_modal(str(payload.get("trigger_id") or ""), confirm_modal(incident, response_url, hint))
            return
        note = "approved in Slack" if action_id == "approve" else "rejected in Slack"
        await self._decide(response_url, person, incident, action_id, note, None, origin)

    async def _confirmed(self, payload: dict[str, Any], who: Clicker, origin: str | None) -> None:
        view = _dict(payload.get("view"))
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            return
        typed = _dict(_dict(_dict(_dict(view.get("state")).get("values")).get("confirm")).get("target")).get("value")
        incident, response_url = str(meta.get("incident") or ""), str(meta.get("response_url") or "")
        if not incident or not response_url:
            return
        if who.person is None:
            await self._unmapped(who, incident, "approve", response_url)
            return
        await self._decide(response_url, who.person, incident, "approve", "approved in Slack", str(typed or ""), origin)

    async def _decide(self, response_url: str, person: str, incident: str, action: str, note: str, confirm: str | None,
                      origin: str | None) -> None:
        try:
            result = await self._approver.send(person, "slack", incident, action, note, confirm, origin=origin)
        except ApprovalError as exc:
            if not isinstance(exc, Unavailable):
                refused(self.metrics, "slack", reason_of(exc), f"{person} on {incident}: {exc}")
            await self._ephemeral(response_url, f"Not counted ({person}): {exc}")
            return
        text = f"{'Approved' if action == 'approve' else 'Rejected'} by {person} in Slack: {result}"
        await self._api.respond(response_url, {"replace_original": True, "text": text, "blocks": decided_blocks(incident, text)})

    async def _needs_confirmation(self, incident: str) -> bool:
        record = await self._approver.record(incident)
        return record.decision is not None and self._approver.whitelist.confirms(record.decision.tier)

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

    async def _unmapped(self, who: Clicker, incident: str, action: str, response_url: str) -> None:
        """A user or workspace the whitelist maps to nobody: record it on the incident, within a cap."""
        shown = f" ({who.display!r})" if who.display else ""
        detail = f"Slack user {who.slack_id}{shown} is mapped to no person; {action} on {incident}"
        key = (who.slack_id, incident)
        sent, recorded = self._forwarded.get(key, 0), False
        if action == "evidence":  # not an answer: nothing to record on the incident, and nothing shown
            refused(self.metrics, "slack", "unmapped_user", f"{detail}: evidence not shown")
        elif sent >= MAX_FORWARDED_REFUSALS:
            refused(self.metrics, "slack", "unmapped_user",
                    f"{detail}: not sent to the incident ({MAX_FORWARDED_REFUSALS} were, from this ingress)")
        else:
            self._forwarded[key] = sent + 1
            self._forwarded.move_to_end(key)
            while len(self._forwarded) > SEEN:
                self._forwarded.popitem(last=False)
            try:
                await self._approver.unmapped(who.slack_id, who.display, incident, action)
                recorded = True
                refused(self.metrics, "slack", "unmapped_user", f"{detail}: recorded on the incident")
            except ApprovalError as exc:
                refused(self.metrics, "slack", "unmapped_user", f"{detail}: not recorded: {exc}")
        await self._ephemeral(response_url, f"Your Slack user ({who.slack_id}) is not mapped to a person in the whitelist: "
                                            "nothing you do here counts." + (" The attempt is recorded on the incident."
                                                                             if recorded else ""))

    async def _ephemeral(self, response_url: str, text: str) -> None:
        await self._api.respond(response_url, {"response_type": "ephemeral", "replace_original": False, "text": text[:2900]})


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Clicker:
    """Who clicked: the whitelist's person, if any, and the Slack ids and display name as given."""

    person: str | None
    slack_id: str  # TEAM:USER, from the signed payload
    display: str   # as given, bounded: for people to read, never to decide


def _slack_id(value: str) -> str:
    return _ID_CHARS.sub("", value)[:32] or "?"


def _shown(value: Any) -> str:
    return "".join(c for c in value if c.isprintable())[:SHOWN] if isinstance(value, str) else ""


def register(app: FastAPI, interactions: SlackInteractions | None, body_of) -> None:
    @app.post("/v1/slack/interactions", summary="Slack app interactivity: buttons and modals",
              responses={200: {}, 400: {}, 401: {}, 404: {}, 413: {}})
    async def slack_interactions(request: Request) -> Response:
        body = await body_of(request)
        if interactions is None:
            return Response(json.dumps({"error": "Slack is not configured on this ingress"}), status_code=404,
                            media_type="application/json")
        try:
            payload, origin = interactions.authenticate(request.headers, body)
        except SlackProblem as exc:
            client = request.client.host if request.client else "?"
            refused(interactions.metrics, "slack", exc.metric, f"{exc.status} to {client}: {exc.reason}")
            return Response(json.dumps({"error": exc.reason}), status_code=exc.status, media_type="application/json")
        interactions.handle(payload, origin)
        return Response(status_code=200)  # acknowledged; the answer goes to response_url
