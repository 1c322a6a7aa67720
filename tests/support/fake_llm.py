"""A loopback language model that speaks OpenAI Chat Completions or Anthropic Messages.

It answers with scripted steps, built as the real APIs build their bodies, and it checks
each request the way the real API would refuse it (answering 400, or 401, in the
provider's error shape), so a test that passes against it has checked our mapping too::

    script = [tool_call("read_logs", {"unit": "api"}), status(429, retry_after=2), text("pool exhausted")]
    with FakeLLM("anthropic", script, api_key="sk-test") as llm:
        config = LlmConfig(provider="anthropic", base_url=llm.url, model="m", api_key="sk-test")
        ...
        assert llm.rejections == []
        assert llm.requests[0].body["system"] == "..."

Only requests that pass the checks take a step; when the script runs out, the last step
repeats (one tool-call step is then a model that never stops calling tools).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, Union

from tests.workflows.helpers import LoopbackHTTP

Provider = Literal["openai", "anthropic"]
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")   # both providers' rule for tool names
ANTHROPIC_VERSIONS = {"2023-06-01", "2023-01-01"}


# --- script steps ----------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict | str           # a str is sent as is: malformed arguments
    id: str | None = None           # None: the fake makes one (call_N / toolu_N)


@dataclass(frozen=True)
class Reply:
    content: str = ""
    calls: tuple[Call, ...] = ()
    stop: str | None = None         # None: tool_calls/tool_use when there are calls, else stop/end_turn


@dataclass(frozen=True)
class Status:
    code: int
    body: dict | str | bytes | None = None   # None: the provider's error shape for this code
    retry_after: str | float | None = None
    chunked: bool = False                    # no Content-Length: the client has to count


@dataclass(frozen=True)
class Delay:
    seconds: float
    then: "Step"


Step = Union[Reply, Status, Delay]


def tool_call(name: str, arguments: dict | str, id: str | None = None, content: str = "") -> Reply:
    return Reply(content=content, calls=(Call(name, arguments, id),))


def tool_calls(calls: list[Reply | Call | tuple], content: str = "") -> Reply:
    """Several calls in one turn: ``tool_calls([tool_call("a", {}), ("b", {"x": 1})])``."""
    flat: list[Call] = []
    for c in calls:
        flat += c.calls if isinstance(c, Reply) else [c if isinstance(c, Call) else Call(*c)]
    return Reply(content=content, calls=tuple(flat))


def text(content: str, stop: str | None = None) -> Reply:
    return Reply(content=content, stop=stop)


def status(code: int, body: dict | str | bytes | None = None, retry_after: str | float | None = None,
           chunked: bool = False) -> Status:
    return Status(code, body, retry_after, chunked)


def delay(seconds: float, then: Step) -> Delay:
    return Delay(seconds, then)


# --- the server ------------------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]         # lower-cased names
    body: Any                       # the parsed JSON (None when it was not JSON)
    rejected: str | None = None     # why the fake refused it, as it told the client


class Invalid(Exception):
    def __init__(self, message: str, code: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code, self.kind = code, kind


class FakeLLM(LoopbackHTTP):
    def __init__(self, provider: Provider, script: list[Step], api_key: str | None = None) -> None:
        assert script, "a script needs at least one step"
        self.provider = provider
        self.script = list(script)
        self.api_key = api_key
        self.requests: list[Received] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        super().__init__()
        # A short poll: the base class's default makes every exit wait up to half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self._server.server_address[1]}"
        return base + "/v1" if self.provider == "openai" else base

    @property
    def rejections(self) -> list[str]:
        return [r.rejected for r in self.requests if r.rejected]

    def __exit__(self, *exc) -> None:
        self._stopping.set()   # wakes delayed answers so the server stops at once
        super().__exit__(*exc)

    def _take(self) -> tuple[Step, int]:
        with self._lock:
            step = self.script[min(self._next, len(self.script) - 1)]
            self._next += 1
            return step, self._next   # the answer's number, for ids

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # for chunked answers; every answer closes its connection

        def do_POST(self) -> None:  # noqa: N802
            fake: FakeLLM = self.server_state
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            received = Received(self.path, headers, body)
            with fake._lock:
                fake.requests.append(received)
            try:
                try:
                    (check_openai if fake.provider == "openai" else check_anthropic)(self.path, headers, body, fake.api_key)
                except (AttributeError, TypeError, KeyError) as exc:   # a field of the wrong type somewhere
                    raise Invalid(f"malformed request: {type(exc).__name__}: {exc}") from None
            except Invalid as refused:
                received.rejected = str(refused)
                return self._send(refused.code, error_body(fake.provider, refused.code, str(refused), refused.kind))
            step, n = fake._take()
            while isinstance(step, Delay):
                if fake._stopping.wait(step.seconds):
                    return
                step = step.then
            if isinstance(step, Status):
                payload = step.body if step.body is not None else error_body(fake.provider, step.code)
                extra = {"retry-after": str(step.retry_after)} if step.retry_after is not None else {}
                return self._send(step.code, payload, extra, step.chunked)
            build = openai_reply if fake.provider == "openai" else anthropic_reply
            self._send(200, build(step, body["model"], n, len(raw)))

        def do_GET(self) -> None:  # noqa: N802
            """The model list, as both providers serve it at /v1/models (the worker's probe)."""
            fake: FakeLLM = self.server_state
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append(Received(self.path, headers, None))
            if self.path != "/v1/models":
                return self._send(404, error_body(fake.provider, 404, f"Unknown request URL: GET {self.path}", "not_found"))
            key = headers.get("authorization") if fake.provider == "openai" else headers.get("x-api-key")
            want = (f"Bearer {fake.api_key}" if fake.provider == "openai" else fake.api_key) if fake.api_key else key
            if key != want:
                return self._send(401, error_body(fake.provider, 401, "invalid x-api-key", "authentication_error"))
            model = {"id": "test-model", "object": "model"} if fake.provider == "openai" else {"id": "test-model", "type": "model"}
            self._send(200, {"object": "list", "data": [model]} if fake.provider == "openai" else {"data": [model]})

        def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None, chunked: bool = False) -> None:
            data = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 65536):
                        piece = data[i:i + 65536]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the client gave up (a timeout test, or an oversized body refused)
            self.close_connection = True


# --- bodies as the providers build them --------------------------------------------------

def openai_reply(step: Reply, model: str, n: int, request_size: int) -> dict:
    calls = [{"id": c.id or f"call_{n}_{i}", "type": "function",
              "function": {"name": c.name, "arguments": c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments)}}
             for i, c in enumerate(step.calls)]
    message: dict[str, Any] = {"role": "assistant", "content": step.content or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    prompt, completion = request_size // 4, len(json.dumps(message)) // 4
    return {"id": f"chatcmpl-fake{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": step.stop or ("tool_calls" if calls else "stop")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "system_fingerprint": None}


def anthropic_reply(step: Reply, model: str, n: int, request_size: int) -> dict:
    content: list[dict] = [{"type": "text", "text": step.content}] if step.content else []
    for i, c in enumerate(step.calls):
        arguments = c.arguments
        if isinstance(arguments, str):   # the real API always sends an object; a str here tests our guard
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        content.append({"type": "tool_use", "id": c.id or f"toolu_fake{n}_{i}", "name": c.name, "input": arguments})
    return {"id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": step.stop or ("tool_use" if step.calls else "end_turn"), "stop_sequence": None,
            "usage": {"input_tokens": request_size // 4, "output_tokens": len(json.dumps(content)) // 4}}


OPENAI_ERRORS = {401: ("invalid_request_error", "invalid_api_key"), 404: ("invalid_request_error", "model_not_found"),
                 429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None), 503: ("server_error", None)}
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    529: "overloaded_error"}


def error_body(provider: Provider, code: int, message: str | None = None, kind: str | None = None) -> dict:
    message = message or f"fake {provider} error {code}"
    if provider == "openai":
        kind_, err_code = OPENAI_ERRORS.get(code, (kind or "invalid_request_error", None))
        return {"error": {"message": message, "type": kind or kind_, "param": None, "code": err_code}}
    return {"type": "error", "error": {"type": kind if kind and code == 400 else ANTHROPIC_ERRORS.get(code, "api_error"),
                                       "message": message}}


# --- what the real APIs refuse -----------------------------------------------------------

def _common(path: str, want: str, headers: dict, body: Any) -> None:
    if path != want:
        raise Invalid(f"Unknown path {path}; this fake serves {want}", 404, "not_found_error")
    if "application/json" not in headers.get("content-type", ""):
        raise Invalid("Content-Type must be application/json")
    if not isinstance(body, dict):
        raise Invalid("The request body is not valid JSON")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("model: field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise Invalid("messages: at least one message is required")


def check_openai(path: str, headers: dict, body: Any, api_key: str | None) -> None:
    if api_key is not None and headers.get("authorization") != f"Bearer {api_key}":
        raise Invalid("Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                      401, "invalid_request_error")
    _common(path, "/v1/chat/completions", headers, body)
    limits = [k for k in ("max_tokens", "max_completion_tokens") if k in body]
    if any(not isinstance(body[k], int) or body[k] < 1 for k in limits):
        raise Invalid(f"Invalid '{limits[0]}': expected a positive integer")
    if "tools" in body:
        if not isinstance(body["tools"], list) or not body["tools"]:
            raise Invalid("[] is too short - 'tools'")
        for i, tool in enumerate(body["tools"]):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(fn, dict) or set(fn) - {"name", "description", "parameters", "strict"}:
                raise Invalid(f"Invalid 'tools[{i}]': expected {{type: 'function', function: {{name, description, parameters}}}}")
            if not TOOL_NAME.match(str(fn.get("name"))):
                raise Invalid(f"Invalid 'tools[{i}].function.name': string does not match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if not isinstance(fn.get("parameters", {}), dict) or fn.get("parameters", {}).get("type", "object") != "object":
                raise Invalid(f"Invalid schema for function '{fn['name']}': schema must be a JSON Schema of 'type: \"object\"'")
    pending: list[str] = []   # tool_call ids of the last assistant message not yet answered
    for i, m in enumerate(body["messages"]):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise Invalid(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'.")
        if role != "tool" and pending:
            raise Invalid("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                          f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}")
        content = m.get("content")
        if role == "assistant" and "tool_calls" in m:
            calls = m["tool_calls"]
            if not isinstance(calls, list) or not calls:
                raise Invalid(f"[] is too short - 'messages.{i}.tool_calls'")
            for call in calls:
                fn = call.get("function") or {}
                if call.get("type") != "function" or not call.get("id") or not isinstance(fn.get("arguments"), str) \
                        or not TOOL_NAME.match(str(fn.get("name"))):
                    raise Invalid(f"Invalid 'messages[{i}].tool_calls': expected {{id, type: 'function', function: {{name, arguments: string}}}}")
            pending = [c["id"] for c in calls]
            if content is not None and not isinstance(content, str):
                raise Invalid(f"Invalid type for 'messages[{i}].content'")
            continue
        if not isinstance(content, str):
            raise Invalid(f"Invalid type for 'messages[{i}].content': expected a string, but got {type(content).__name__} instead.")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                raise Invalid(f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. (messages[{i}])")
            pending.remove(m["tool_call_id"])
    if pending:
        raise Invalid(f"An assistant message with 'tool_calls' must be followed by tool messages: {', '.join(pending)} unanswered")


def check_anthropic(path: str, headers: dict, body: Any, api_key: str | None) -> None:
    if "anthropic-version" not in headers:
        raise Invalid("anthropic-version: header is required")
    if headers["anthropic-version"] not in ANTHROPIC_VERSIONS:
        raise Invalid(f"anthropic-version: invalid version {headers['anthropic-version']}")
    if api_key is not None and headers.get("x-api-key") != api_key:
        raise Invalid("invalid x-api-key", 401, "authentication_error")
    _common(path, "/v1/messages", headers, body)
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise Invalid("max_tokens: Field required")
    extra = set(body) - {"model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "top_p", "top_k",
                         "stop_sequences", "stream", "metadata", "thinking"}
    if extra:
        raise Invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise Invalid("system: Input should be a valid string or list of text blocks")
    for i, tool in enumerate(body.get("tools", [])):
        if not isinstance(tool, dict) or set(tool) - {"name", "description", "input_schema", "type", "cache_control"}:
            raise Invalid(f"tools.{i}: Extra inputs are not permitted (expected name, description, input_schema)")
        if not TOOL_NAME.match(str(tool.get("name"))):
            raise Invalid(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if not isinstance(tool.get("input_schema"), dict) or tool["input_schema"].get("type") != "object":
            raise Invalid(f"tools.{i}.input_schema: Input tag 'object' expected for field 'type'")
    previous_uses: set[str] = set()   # tool_use ids of the message just before
    for i, m in enumerate(body["messages"]):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Unexpected role {role!r}. The Messages API accepts a top-level `system` "
                          "parameter, not \"system\" as an input message role." if role == "system" else
                          f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise Invalid("messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            raise Invalid(f"messages.{i}: all messages must have non-empty content except for the optional final assistant message")
        uses: set[str] = set()
        answered: set[str] = set()
        seen_other = False
        for j, b in enumerate(blocks):
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                if not isinstance(b.get("text"), str) or not b["text"]:
                    raise Invalid(f"messages.{i}.content.{j}: text content blocks must be non-empty")
                seen_other = True
            elif kind == "tool_use" and role == "assistant":
                if not b.get("id") or not TOOL_NAME.match(str(b.get("name"))) or not isinstance(b.get("input"), dict):
                    raise Invalid(f"messages.{i}.content.{j}.tool_use: id, name and an object input are required")
                uses.add(b["id"])
            elif kind == "tool_result" and role == "user":
                if seen_other:
                    raise Invalid(f"messages.{i}: tool_result blocks must come first in the content, before any text")
                if b.get("tool_use_id") not in previous_uses:
                    raise Invalid(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                                  f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                                  "block in the previous message.")
                if not isinstance(b.get("content", ""), (str, list)):
                    raise Invalid(f"messages.{i}.content.{j}.content: Input should be a valid string or list")
                answered.add(b["tool_use_id"])
            else:
                raise Invalid(f"messages.{i}.content.{j}: a {kind!r} block is not allowed in a {role} message")
        if role == "user" and previous_uses - answered:
            raise Invalid(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                          f"{', '.join(sorted(previous_uses - answered))}")
        previous_uses = uses
    if body["messages"][-1]["role"] == "assistant" and previous_uses:
        raise Invalid("the final assistant message has tool_use blocks without results")
