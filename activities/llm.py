"""One turn of the diagnosis agent's conversation with a language model, over HTTP.

Over 300 lines on purpose: the two wire formats side by side, so a difference in how
they are sent, read or refused is seen at once.

Two wire formats: OpenAI Chat Completions (also served by Ollama, vLLM, llama.cpp under
``/v1``) and Anthropic Messages; the conversation itself is provider-neutral
(``selfheal.contract``). Failures are ``ApplicationError``s for the activity's retry policy:
overload, rate limits and network trouble are retried (``LlmUnavailable``), so is a
garbled answer (``LlmMalformed``: another sample may be fine); a request the provider
refuses (bad key, unknown model, bad request) is not (``LlmRefused``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from temporalio.exceptions import ApplicationError

from selfheal.contract import ChatMessage, ModelTurn, ModelTurnInput, ToolCall

log = logging.getLogger(__name__)

DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
MAX_BODY = 1024 * 1024   # bytes of a response we are willing to hold and parse
MAX_RAW = 16_384         # characters of unparseable tool arguments kept (ToolCall.raw)
MAX_ERROR = 500          # characters of a provider's error message kept
MAX_RETRY_AFTER = 60.0   # seconds: a longer Retry-After must not park an incident
# The default turn timeout: 30 s for the prompt, then 4 tokens a second (a CPU's pace for
# a small model), so 2,048 tokens get about 9 minutes. Hosted APIs answer far sooner.
PROBE_TIMEOUT = 10.0  # seconds for the start-up probe of the model endpoint
SECONDS_BASE = 30.0
SECONDS_PER_TOKEN = 0.25


class LlmConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["openai", "anthropic"]
    base_url: str
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None   # never in repr, str or logs
    # Seconds for one whole request; by default derived from max_tokens (``turn_timeout``).
    timeout: float | None = Field(default=None, gt=0)
    max_tokens: int = Field(default=2048, ge=1)

    @property
    def turn_timeout(self) -> float:
        """How long one turn may take: ``timeout`` if set, else enough for ``max_tokens`` at
        CPU speed. A small model on these 2 cores wrote a 2,048-token answer in minutes,
        beyond the 60 s this once was: SECONDS_BASE plus SECONDS_PER_TOKEN per token."""
        return self.timeout if self.timeout is not None else SECONDS_BASE + SECONDS_PER_TOKEN * self.max_tokens

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LlmConfig | None:
        get = lambda name: env.get(name, "").strip()  # noqa: E731 (empty counts as unset, as in env files)
        provider = get("SELFHEAL_LLM_PROVIDER")
        if not provider:
            return None
        if provider not in DEFAULT_URLS:
            raise ValueError(f"SELFHEAL_LLM_PROVIDER: {provider!r} is not one of {sorted(DEFAULT_URLS)}")
        if not get("SELFHEAL_LLM_MODEL"):
            raise ValueError(f"SELFHEAL_LLM_MODEL is required when SELFHEAL_LLM_PROVIDER={provider}")
        key, key_file = get("SELFHEAL_LLM_API_KEY"), get("SELFHEAL_LLM_API_KEY_FILE")
        if key and key_file:
            raise ValueError("SELFHEAL_LLM_API_KEY and SELFHEAL_LLM_API_KEY_FILE are both set: choose one")
        if key_file:
            try:
                key = Path(key_file).read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"SELFHEAL_LLM_API_KEY_FILE: cannot read {key_file}: {type(exc).__name__}") from None
            if not key:
                raise ValueError(f"SELFHEAL_LLM_API_KEY_FILE: {key_file} is empty")
        values: dict[str, Any] = {"provider": provider, "model": get("SELFHEAL_LLM_MODEL"), "api_key": key or None,
                                  "base_url": get("SELFHEAL_LLM_BASE_URL") or DEFAULT_URLS[provider]}
        values |= {f: get(f"SELFHEAL_LLM_{f.upper()}") for f in ("timeout", "max_tokens") if get(f"SELFHEAL_LLM_{f.upper()}")}
        try:
            return cls(**values)
        except ValidationError as exc:  # each field is SELFHEAL_LLM_<FIELD>; pydantic's echo of the input is left out
            error = exc.errors()[0]
            raise ValueError(f"SELFHEAL_LLM_{str(error['loc'][0]).upper()}: {error['msg']}") from None


class _Client:
    """What both wire formats share; subclasses say ``_headers``, ``_request``, ``_response``."""

    path = ""

    def __init__(self, config: LlmConfig, http: httpx.AsyncClient | None = None):
        self.config = config
        self._own = http is None
        self._http = http or httpx.AsyncClient()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    def _fail(self, message: str, kind: str, retryable: bool = True, delay: float | None = None) -> ApplicationError:
        return ApplicationError(f"{self.config.provider} {self.config.model}: {message}", type=kind,
                                non_retryable=not retryable,
                                next_retry_delay=timedelta(seconds=delay) if delay is not None else None)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            # httpx's timeout is per read; the deadline bounds the whole exchange, so a
            # server trickling bytes cannot hold the activity beyond it.
            async with asyncio.timeout(self.config.turn_timeout):
                async with self._http.stream("POST", self.config.base_url + self.path, json=body, headers=self._headers(),
                                             timeout=self.config.turn_timeout) as response:
                    data = await self._read(response)
        except (TimeoutError, httpx.TimeoutException):
            raise self._fail(f"no answer within {self.config.turn_timeout:g}s", "LlmUnavailable") from None
        except httpx.RequestError as exc:  # connection refused or reset, bad gzip...: the type, never the request
            raise self._fail(f"request failed: {type(exc).__name__}", "LlmUnavailable") from None
        status = response.status_code
        log.debug("llm %s %s: HTTP %s in %.1fs", self.config.provider, self.config.model, status, time.monotonic() - started)
        if not 200 <= status < 300:  # a redirect is a wrong base URL: refused like a 4xx
            said = _error_message(data)
            if self.config.api_key:  # a provider may quote the key it refused: never pass it on (scrubbed before the cut)
                said = said.replace(self.config.api_key.get_secret_value(), "***")
            said = said[:MAX_ERROR]
            if status in (408, 429) or status >= 500:
                after = response.headers.get("retry-after", "").strip()[:64]
                raise self._fail(f"HTTP {status}" + (f" (Retry-After: {after})" if after else "") + f": {said}",
                                 "LlmUnavailable", delay=_seconds(after))
            raise self._fail(f"HTTP {status}: {said}", "LlmRefused", retryable=False)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise self._fail(f"HTTP {status}: the body is not a JSON object", "LlmMalformed")
        return parsed

    async def _read(self, response: httpx.Response) -> bytes:
        # Counted as it arrives (after decompression), so neither a lying Content-Length
        # nor a compressed bomb makes us hold more than MAX_BODY.
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise self._fail(f"HTTP {response.status_code}: a {declared}-byte body is over the {MAX_BODY}-byte limit", "LlmMalformed")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY:
                raise self._fail(f"HTTP {response.status_code}: the body is over the {MAX_BODY}-byte limit", "LlmMalformed")
            chunks.append(chunk)
        return b"".join(chunks)

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> str | None:
        """Why the endpoint is not usable (None when it answers): the provider's model list,
        read once at start. It spends no tokens, and it catches what every turn would hit:
        a host that does not answer, a base URL without /v1 (404), a refused key."""
        url = self.config.base_url + self.models_path
        try:
            response = await self._http.get(url, headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return f"{url} does not answer ({type(exc).__name__})"
        if response.status_code == 404:
            return f"{url} answered 404: is SELFHEAL_LLM_BASE_URL right (OpenAI-compatible servers serve under /v1)?"
        if response.status_code in (401, 403):
            return f"{url} refused the key (HTTP {response.status_code}): check SELFHEAL_LLM_API_KEY"
        if not response.is_success:
            return f"{url} answered HTTP {response.status_code}"
        return None

    async def turn(self, inp: ModelTurnInput) -> ModelTurn:
        body = await self._post(self._request(inp))
        try:
            return self._response(body)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:  # ValidationError is a ValueError
            raise self._fail(f"unexpected response shape ({type(exc).__name__})", "LlmMalformed") from None


class OpenAIChat(_Client):
    path = "/chat/completions"
    models_path = "/models"

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key  # local servers (Ollama) need none
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def _request(self, inp: ModelTurnInput) -> dict[str, Any]:
        # OpenAI's own newer models refuse max_tokens; compatible servers know only max_tokens.
        limit = "max_completion_tokens" if urlsplit(self.config.base_url).hostname == "api.openai.com" else "max_tokens"
        body: dict[str, Any] = {"model": self.config.model, "messages": [_openai_message(m) for m in inp.messages],
                                limit: min(inp.max_tokens, self.config.max_tokens)}
        if inp.tools:  # OpenAI refuses an empty list
            body["tools"] = [{"type": "function", "function": t.model_dump()} for t in inp.tools]
            # OpenAI's default with tools, said aloud: llama-cpp-python's server takes tools
            # without tool_choice as "none" and drops them.
            body["tool_choice"] = "auto"
        return body

    def _response(self, body: dict[str, Any]) -> ModelTurn:
        choice = body["choices"][0]
        message = choice["message"]
        calls = [_tool_call(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        usage = body.get("usage") or {}
        return ModelTurn(content=message.get("content") or "", tool_calls=calls, stop_reason=choice.get("finish_reason") or "",
                         usage=_usage(usage.get("prompt_tokens"), usage.get("completion_tokens")))


class AnthropicMessages(_Client):
    path = "/v1/messages"
    models_path = "/v1/models"

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"anthropic-version": "2023-06-01", **({"x-api-key": key.get_secret_value()} if key else {})}

    def _request(self, inp: ModelTurnInput) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in inp.messages if m.role == "system" and m.content)
        messages: list[dict[str, Any]] = []
        for m in inp.messages:
            if m.role == "system":
                continue
            if m.role == "tool":
                blocks = [{"type": "tool_result", "tool_use_id": m.tool_call_id, **({"content": m.content} if m.content else {})}]
            else:  # Anthropic refuses empty text blocks
                blocks = [{"type": "text", "text": m.content}] if m.content else []
                blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            role = "assistant" if m.role == "assistant" else "user"
            if messages and messages[-1]["role"] == role:  # roles must alternate: tool results join the user turn
                messages[-1]["content"] += blocks
            elif blocks:
                messages.append({"role": role, "content": blocks})
        for m in messages:  # tool results must come first in their message
            m["content"].sort(key=lambda b: b["type"] != "tool_result")
        body: dict[str, Any] = {"model": self.config.model, "max_tokens": min(inp.max_tokens, self.config.max_tokens),
                                "messages": messages}
        if system:
            body["system"] = system
        if inp.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in inp.tools]
        return body

    def _response(self, body: dict[str, Any]) -> ModelTurn:
        if body.get("type") != "message" or not isinstance(body["content"], list):
            raise ValueError("not a message")
        text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
        calls = [_tool_call(b["id"], b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]
        usage = body.get("usage") or {}
        return ModelTurn(content=text, tool_calls=calls, stop_reason=body.get("stop_reason") or "",
                         usage=_usage(usage.get("input_tokens"), usage.get("output_tokens")))


def client_for(config: LlmConfig, http: httpx.AsyncClient | None = None) -> OpenAIChat | AnthropicMessages:
    return {"openai": OpenAIChat, "anthropic": AnthropicMessages}[config.provider](config, http)


def _openai_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        # Content beside tool calls is a string, even empty: OpenAI accepts null there,
        # llama-cpp-python's server answers 500 ("Input should be a valid string"). Arguments
        # go back as valid JSON even when the model's were not (they are in ``raw``):
        # strict servers re-parse them.
        out["content"] = m.content or ""
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                             for c in m.tool_calls]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool_call(call_id: Any, name: Any, arguments: Any) -> ToolCall:
    """A model's arguments are untrusted text: keep what is not a JSON object as ``raw``.

    Control characters inside strings are accepted (``strict=False``): llama-cpp-python's
    server (0.3.16) constrains tool calls with a grammar whose strings admit them, so a
    model there writes real newlines inside its rationale. They are text like any other,
    redacted and checked against the answer's schema; refusing the whole call as "not a
    JSON object" would hide what the model answered."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments, strict=False)
        except ValueError:
            parsed = None
        arguments, raw = (parsed, "") if isinstance(parsed, dict) else ({}, arguments)
    elif not isinstance(arguments, dict):  # Anthropic sends an object; anything else is kept as text
        arguments, raw = {}, json.dumps(arguments)
    else:
        raw = ""
    return ToolCall(id=call_id, name=name, arguments=arguments, raw=raw[:MAX_RAW])


def _usage(input_tokens: Any, output_tokens: Any) -> dict[str, int]:  # one vocabulary for both providers
    return {k: v for k, v in {"input_tokens": input_tokens, "output_tokens": output_tokens}.items() if isinstance(v, int)}


def _error_message(data: bytes) -> str:
    """Both providers say ``{"error": {"message": ...}}``; anything else is quoted as text."""
    try:
        error = json.loads(data).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    except (ValueError, AttributeError):
        pass
    return data.decode("utf-8", "replace").strip() or "(no body)"


def _seconds(retry_after: str) -> float | None:
    """A Retry-After in seconds, capped; an HTTP date is only quoted: the retry policy's backoff applies."""
    try:
        return min(float(retry_after), MAX_RETRY_AFTER) if float(retry_after) >= 0 else None
    except ValueError:
        return None
