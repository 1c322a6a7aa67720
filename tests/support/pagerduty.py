"""A loopback server that speaks PagerDuty's Events API v2 wire format, for tests
(PagerDuty is a paid outside service).

``POST /v2/enqueue`` as PagerDuty answers it: 202 ``{"status": "success", "message":
"Event processed", "dedup_key": ...}`` for a valid event; 400 ``{"status": "invalid
event", "message": "Event object is invalid", "errors": [...]}`` for an unknown routing
key or a malformed event (the checks PagerDuty documents: event_action, dedup_key length,
and a trigger's payload summary, source and severity); and whatever a test queues first
(``answers``: a 429 with ``Retry-After``, a 500). Every valid event is recorded, and the
alerts it would hold (one per routing key and dedup_key) with their state.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from tests.workflows.helpers import LoopbackHTTP

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


class FakePagerDuty(LoopbackHTTP):
    path = "/v2/enqueue"

    def __init__(self, *routing_keys: str) -> None:
        self.routing_keys = set(routing_keys)
        self.events: list[dict] = []               # every event accepted, in order
        self.alerts: dict[tuple[str, str], str] = {}  # (routing key, dedup_key) -> triggered/acknowledged/resolved
        self.answers: list[tuple[int, dict]] = []  # (status, headers) to answer first, one per request
        self.refused: list[dict] = []              # requests answered 4xx/5xx
        # When set: the next accepted event is recorded (PagerDuty has it) and its answer held
        # until the event is set (a worker killed before it heard the 202).
        self.hold: threading.Event | None = None
        self.held = 0
        super().__init__()

    def of(self, dedup_key: str) -> list[tuple[str, str]]:
        """(event_action, routing_key) of every accepted event of one incident."""
        return [(e["event_action"], e["routing_key"]) for e in self.events if e["dedup_key"] == dedup_key]

    @staticmethod
    def problems(event: dict, keys: set[str]) -> list[str]:
        errors = []
        if event.get("routing_key") not in keys:
            errors.append("Invalid routing key")
        if event.get("event_action") not in ACTIONS:
            errors.append("'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')")
        if len(event.get("dedup_key") or "") > 255:
            errors.append("'dedup_key' must be shorter than 255 characters")
        if event.get("event_action") == "trigger":
            payload = event.get("payload") or {}
            for field in ("summary", "source", "severity"):
                if not payload.get(field):
                    errors.append(f"'payload.{field}' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' is invalid")
            if len(payload.get("summary") or "") > 1024:
                errors.append("'payload.summary' is too long")
        elif not event.get("dedup_key"):
            errors.append("'dedup_key' is required for acknowledge and resolve")
        return errors

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            state = self.server_state
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                event = json.loads(raw)
            except ValueError:
                return self._answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                          "errors": ["Malformed JSON"]})
            if self.path != "/v2/enqueue":
                return self._answer(404, {"status": "not found"})
            if state.answers:
                status, headers = state.answers.pop(0)
                state.refused.append(event)
                return self._answer(status, {"status": "throttled" if status == 429 else "error"}, headers)
            errors = state.problems(event, state.routing_keys)
            if errors:
                state.refused.append(event)
                return self._answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
            state.events.append(event)
            hold, state.hold = state.hold, None
            if hold is not None:
                state.held += 1
                hold.wait(60)
            key = (event["routing_key"], event["dedup_key"])
            new = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[event["event_action"]]
            if key in state.alerts or new == "triggered":  # PagerDuty drops an acknowledge or resolve of no alert
                state.alerts[key] = new if not (new == "triggered" and state.alerts.get(key) == "acknowledged") else "acknowledged"
            self._answer(202, {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]})

        def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
