"""The PagerDuty notifier: Events API v2 (``POST /v2/enqueue``).

It sends what the workflow decided (``Notification.page``: ``workflows/paging.py``): a
``trigger``, ``acknowledge`` or ``resolve`` for the incident, to each routing key the
event names, with the incident id as the ``dedup_key`` (hashed when longer than
PagerDuty's 255 characters), so a retried activity or a re-sent notification never opens
a second PagerDuty alert. Routing keys are read here, from the worker's environment: the
whitelist and the history hold only the names of the variables.

Answers: 202 is success; 429 and 5xx are retried (after ``Retry-After``); 400 (a bad
routing key, a malformed event) is not retried: the workflow records it and counts it in
``selfheal_notifications_undelivered``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Mapping

import httpx
from temporalio.exceptions import ApplicationError

from selfheal.activities.notify import refused
from selfheal.contract import Notification

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
DEFAULT_KEY = ""  # PageEvent's name for the worker's own SELFHEAL_PAGERDUTY_ROUTING_KEY


def dedup_key(incident_id: str) -> str:
    """The incident id, or a stable hash of it where PagerDuty would refuse its length."""
    if len(incident_id) <= MAX_DEDUP_KEY:
        return incident_id
    return "selfheal-sha256-" + hashlib.sha256(incident_id.encode()).hexdigest()


def summary_of(note: Notification) -> str:
    """One line a person understands at a glance, woken at 3 a.m."""
    d = note.details
    if note.kind == "approval_requested" and d.get("entry"):
        text = (f"[{d.get('service') or 'selfheal'}] {d.get('summary') or note.summary}: selfheal proposes "
                f"{d.get('action', d['entry'])} on {d.get('target', '?')}; {d.get('tier', '')}, approvers "
                f"{d.get('approvers') or 'none'}")
    else:
        text = f"[{d.get('service') or 'selfheal'}] {note.summary}"
    return text[:MAX_SUMMARY]


class PagerDuty:
    name = "pagerduty"

    def __init__(self, http: httpx.AsyncClient, routing_key: str | None, url: str = EVENTS_URL,
                 ui_url: str | None = None, namespace: str = "default",
                 environ: Callable[[], Mapping[str, str]] = lambda: os.environ):
        self._http, self._key, self._url = http, routing_key, url
        self._ui_url, self._namespace, self._environ = ui_url, namespace, environ

    def _routing_key(self, name: str) -> str:
        key = self._key if name == DEFAULT_KEY else self._environ().get(name)
        if not key:
            where = "SELFHEAL_PAGERDUTY_ROUTING_KEY" if name == DEFAULT_KEY else name
            raise ApplicationError(f"no PagerDuty routing key: {where} is not set on this worker",
                                   type="NoRoutingKey", non_retryable=True)
        return key

    def event(self, note: Notification, routing_key: str) -> dict:
        page = note.page
        body: dict = {"routing_key": routing_key, "event_action": page.action, "dedup_key": dedup_key(note.incident_id)}
        if page.action != "trigger":
            return body
        links = []
        if self._ui_url:
            links.append({"href": f"{self._ui_url.rstrip('/')}/namespaces/{self._namespace}/workflows/{note.incident_id}",
                          "text": "the incident in the Temporal UI"})
        if note.details.get("slack_link"):
            links.append({"href": note.details["slack_link"], "text": "the approval request in Slack"})
        body |= {
            "payload": {"summary": summary_of(note), "source": note.details.get("service") or "selfheal",
                        "severity": page.severity, "component": note.details.get("entry") or None,
                        "class": note.kind, "custom_details": {"incident": note.incident_id, **note.details}},
            "client": "selfheal",
            **({"client_url": links[0]["href"], "links": links} if links else {}),
        }
        body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
        return body

    async def send(self, note: Notification) -> str:
        if note.page is None:
            return "nothing to page"
        sent = []
        for name in note.page.routing_keys:  # every key paged: an acknowledge or resolve reaches each
            body = self.event(note, self._routing_key(name))
            try:
                response = await self._http.post(self._url, json=body, timeout=10.0)
            except httpx.HTTPError as exc:
                raise ApplicationError(f"PagerDuty unreachable: {type(exc).__name__}") from None
            if response.status_code != 202:
                raise refused("pagerduty", response, _errors(response))
            sent.append(f"{note.page.action} {name or 'default'}")
        return f"pagerduty: {', '.join(sent)} (dedup_key {dedup_key(note.incident_id)[:80]})"


def _errors(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text[:200]
    return "; ".join(map(str, answer.get("errors") or [answer.get("message", "")]))[:300]
