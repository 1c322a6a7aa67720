"""A loopback server that speaks Slack's Web API wire format, for tests (Slack is a paid outside service).

It answers ``chat.postMessage``, ``chat.update``, ``chat.getPermalink`` and ``views.open`` as Slack does
(``{"ok": true, ...}``), takes posts to ``/response/<id>`` as a ``response_url``, and
records every call so tests can assert on what selfheal sent.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from tests.workflows.helpers import LoopbackHTTP


class FakeSlack(LoopbackHTTP):
    def __init__(self, token: str = "xoxb-test") -> None:
        self.token = token
        self.calls: list[tuple[str, dict]] = []  # (method or response path, params)
        self.posted: list[str] = []              # the ts of each message chat.postMessage created
        super().__init__()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - slack_sdk reads (chat.getPermalink) with GET and a query
            self.path, _, query = self.path.partition("?")
            self._answer({k: v[0] for k, v in parse_qs(query).items()})

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if "json" in (self.headers.get("Content-Type") or ""):
                params = json.loads(raw or "{}")
            else:
                params = {k: v[0] for k, v in parse_qs(raw).items()}
            self._answer(params)

        def _answer(self, params: dict) -> None:
            state = self.server_state
            for key in ("blocks", "view"):
                if isinstance(params.get(key), str):
                    params[key] = json.loads(params[key])
            if self.path.startswith("/api/"):
                method = self.path[len("/api/"):]
                if self.headers.get("Authorization") != f"Bearer {state.token}":
                    answer = {"ok": False, "error": "invalid_auth"}
                else:
                    answer = {"ok": True, "channel": params.get("channel", "C1"), "ts": f"{time.time():.6f}"}
                    if method == "chat.postMessage":
                        state.posted.append(answer["ts"])
                    if method == "chat.getPermalink":
                        answer["permalink"] = (f"https://fake.slack.test/archives/{params.get('channel')}/"
                                               f"p{str(params.get('message_ts', '')).replace('.', '')}")
                state.calls.append((method, params))
            else:
                answer = {"ok": True}
                state.calls.append((self.path, params))
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    def response_url(self, name: str) -> str:
        return f"{self.base}/response/{name}"

    def called(self, method: str) -> list[dict]:
        return [params for m, params in self.calls if m == method]
