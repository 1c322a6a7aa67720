"""activities/llm.py against a loopback model speaking each provider's real wire format."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from selfheal.activities.llm import MAX_BODY, AnthropicMessages, LlmConfig, OpenAIChat, client_for
from selfheal.contract import ChatMessage, ModelTurnInput, ToolCall, ToolSpec
from tests.support.fake_llm import FakeLLM, delay, status, text, tool_call, tool_calls
from tests.support.ports import free_port

KEY = "sk-test-9f8e7d6c5b4a-never-shown"
PROVIDERS = ["openai", "anthropic"]
TOOLS = [ToolSpec(name="read_logs", description="Read a unit's journal",
                  parameters={"type": "object", "properties": {"unit": {"type": "string"}}, "required": ["unit"]})]
SYSTEM = ChatMessage(role="system", content="You diagnose incidents. Propose only whitelisted actions.")
USER = ChatMessage(role="user", content="ApiDown on web-1")
ASK = ModelTurnInput(messages=[SYSTEM, USER], tools=TOOLS)


def config(provider: str, url: str, **overrides) -> LlmConfig:
    return LlmConfig(**{"provider": provider, "base_url": url, "model": "test-model", "api_key": KEY,
                        "max_tokens": 512, **overrides})


async def failure(llm, inp: ModelTurnInput = ASK) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await llm.turn(inp)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    return info.value


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_calls_then_an_answer_carry_the_conversation(provider):
    script = [tool_calls([tool_call("read_logs", {"unit": "api"}, id="c1"), tool_call("read_logs", {"unit": "db"}, id="c2")],
                         content="Reading both journals."),
              text("The connection pool is exhausted.")]
    with FakeLLM(provider, script, api_key=KEY) as fake:
        llm = client_for(config(provider, fake.url))
        try:
            first = await llm.turn(ModelTurnInput(messages=[SYSTEM, USER], tools=TOOLS, max_tokens=4096))
            assert first.tool_calls == [ToolCall(id="c1", name="read_logs", arguments={"unit": "api"}),
                                        ToolCall(id="c2", name="read_logs", arguments={"unit": "db"})]
            assert first.content == "Reading both journals."
            assert first.stop_reason == {"openai": "tool_calls", "anthropic": "tool_use"}[provider]
            conversation = [SYSTEM, USER, ChatMessage(role="assistant", content=first.content, tool_calls=first.tool_calls),
                            ChatMessage(role="tool", tool_call_id="c1", content="connection pool exhausted"),
                            ChatMessage(role="tool", tool_call_id="c2", content="no errors"),
                            ChatMessage(role="user", content="Two turns left.")]
            second = await llm.turn(ModelTurnInput(messages=conversation, tools=TOOLS, max_tokens=100))
        finally:
            await llm.aclose()
    assert second.content == "The connection pool is exhausted." and second.tool_calls == []
    assert second.stop_reason == {"openai": "stop", "anthropic": "end_turn"}[provider]
    assert set(second.usage) == {"input_tokens", "output_tokens"} and second.usage["input_tokens"] > 0
    assert fake.rejections == []
    one, two = fake.requests
    assert one.body["model"] == two.body["model"] == "test-model"
    assert one.body["max_tokens"] == 512 and two.body["max_tokens"] == 100   # the config caps what a turn asks
    if provider == "openai":
        assert one.path == "/v1/chat/completions" and one.headers["authorization"] == f"Bearer {KEY}"
        assert one.body["messages"] == [{"role": "system", "content": SYSTEM.content}, {"role": "user", "content": USER.content}]
        assert one.body["tools"] == [{"type": "function", "function": TOOLS[0].model_dump()}]
        assistant, result1, result2, nudge = two.body["messages"][2:]
        assert assistant["role"] == "assistant" and assistant["content"] == "Reading both journals."
        assert [(c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in assistant["tool_calls"]] == [("c1", "function", "read_logs", {"unit": "api"}),
                                                      ("c2", "function", "read_logs", {"unit": "db"})]
        assert result1 == {"role": "tool", "tool_call_id": "c1", "content": "connection pool exhausted"}
        assert result2 == {"role": "tool", "tool_call_id": "c2", "content": "no errors"}
        assert nudge == {"role": "user", "content": "Two turns left."}
    else:
        assert one.path == "/v1/messages" and one.headers["x-api-key"] == KEY
        assert one.headers["anthropic-version"] == "2023-06-01" and "authorization" not in one.headers
        assert one.body["system"] == SYSTEM.content
        assert one.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": USER.content}]}]
        assert one.body["tools"] == [{"name": "read_logs", "description": TOOLS[0].description,
                                      "input_schema": TOOLS[0].parameters}]
        assert [m["role"] for m in two.body["messages"]] == ["user", "assistant", "user"]   # tool results merged
        assert two.body["messages"][1]["content"] == [
            {"type": "text", "text": "Reading both journals."},
            {"type": "tool_use", "id": "c1", "name": "read_logs", "input": {"unit": "api"}},
            {"type": "tool_use", "id": "c2", "name": "read_logs", "input": {"unit": "db"}}]
        assert two.body["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": "c1", "content": "connection pool exhausted"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "no errors"},
            {"type": "text", "text": "Two turns left."}]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("arguments", ['{"unit": "api"', '["api"]', "x" * 20_000])
async def test_malformed_arguments_are_kept_raw_and_can_be_answered(provider, arguments):
    with FakeLLM(provider, [tool_call("read_logs", arguments, id="bad"), text("done")], api_key=KEY) as fake:
        async with httpx.AsyncClient() as http:
            llm = client_for(config(provider, fake.url), http)
            first = await llm.turn(ASK)
            assert first.tool_calls == [ToolCall(id="bad", name="read_logs", arguments={}, raw=arguments[:16_384])]
            # The call goes back in the conversation: the provider must accept it as sent.
            answer = ChatMessage(role="tool", tool_call_id="bad", content="arguments were not a JSON object")
            second = await llm.turn(ModelTurnInput(messages=[SYSTEM, USER, ChatMessage(role="assistant", tool_calls=first.tool_calls),
                                                             answer], tools=TOOLS))
    assert second.content == "done" and fake.rejections == []


async def test_raw_newlines_inside_argument_strings_are_text_not_malformed():
    # llama-cpp-python's server (0.3.16, chatml-function-calling) writes tool-call arguments
    # under a grammar whose strings admit control characters: SmolLM2 put real newlines in
    # its rationale (bench/real_model.py). Strict JSON refuses them; they are only text.
    arguments = '{ "proposal" : null, "rationale" : "the agent stopped;\n\tsee the log\n} ", "confidence" : 0.5 }'
    with FakeLLM("openai", [tool_call("submit_diagnosis", arguments, id="c1"), text("done")], api_key=KEY) as fake:
        async with httpx.AsyncClient() as http:
            llm = client_for(config("openai", fake.url), http)
            first = await llm.turn(ASK)
            assert first.tool_calls == [ToolCall(id="c1", name="submit_diagnosis", raw="", arguments={
                "proposal": None, "rationale": "the agent stopped;\n\tsee the log\n} ", "confidence": 0.5})]
            second = await llm.turn(ModelTurnInput(messages=[SYSTEM, USER, ChatMessage(role="assistant", tool_calls=first.tool_calls),
                                                             ChatMessage(role="tool", tool_call_id="c1", content="ok")], tools=TOOLS))
    assert second.content == "done" and fake.rejections == []
    sent = fake.requests[1].body["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == first.tool_calls[0].arguments   # goes back as strict JSON


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limit_is_retryable_with_the_retry_after_then_succeeds(provider):
    with FakeLLM(provider, [status(429, retry_after=7), status(503, retry_after=3600), text("ok")], api_key=KEY) as fake:
        llm = client_for(config(provider, fake.url))
        limited = await failure(llm)
        overloaded = await failure(llm)
        assert (await llm.turn(ASK)).content == "ok"
        await llm.aclose()
    assert limited.type == "LlmUnavailable" and not limited.non_retryable
    assert "429" in limited.message and "Retry-After: 7" in limited.message
    assert limited.next_retry_delay == timedelta(seconds=7)
    assert overloaded.type == "LlmUnavailable" and overloaded.next_retry_delay == timedelta(seconds=60)   # capped


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_server_error_is_retryable(provider):
    with FakeLLM(provider, [status(500)]) as fake:
        error = await failure(client_for(config(provider, fake.url)))
    assert error.type == "LlmUnavailable" and not error.non_retryable and "HTTP 500" in error.message
    assert error.next_retry_delay is None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_wrong_key_is_refused_for_good_without_showing_any_key(provider):
    with FakeLLM(provider, [text("never")], api_key="the-right-key") as fake:
        wrong = await failure(client_for(config(provider, fake.url)))
    assert wrong.type == "LlmRefused" and wrong.non_retryable and "HTTP 401" in wrong.message
    assert ("Incorrect API key" if provider == "openai" else "invalid x-api-key") in wrong.message
    # A provider quoting the key it refused: the message keeps the words, not the key.
    quoted = {"error": {"type": "authentication_error", "message": f"Incorrect API key provided: {KEY}." + "!" * 900}}
    with FakeLLM(provider, [status(401, quoted)]) as fake:
        error = await failure(client_for(config(provider, fake.url)))
    assert error.type == "LlmRefused" and error.non_retryable and "Incorrect API key provided: ***." in error.message
    assert len(error.message) < 600
    # Scrubbed before the message is cut: a key straddling the cut leaves no prefix behind.
    with FakeLLM(provider, [status(403, {"error": {"type": "permission_error", "message": "a" * 490 + KEY}})]) as fake:
        error = await failure(client_for(config(provider, fake.url)))
    assert KEY[:8] not in error.message and error.non_retryable


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_request_the_provider_rejects_is_refused_with_its_message(provider):
    # A tool result answering no call: both real APIs refuse it, and so does the fake.
    orphan = ModelTurnInput(messages=[SYSTEM, USER, ChatMessage(role="tool", tool_call_id="nobody", content="?")])
    with FakeLLM(provider, [text("never")]) as fake:
        error = await failure(client_for(config(provider, fake.url)), orphan)
    assert error.type == "LlmRefused" and error.non_retryable and "HTTP 400" in error.message
    assert "tool" in error.message and len(fake.rejections) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("body", [{"unexpected": True}, "<html>bad gateway</html>", [1, 2], {"choices": [], "content": 3}])
async def test_a_body_of_the_wrong_shape_is_malformed(provider, body):
    with FakeLLM(provider, [status(200, body)]) as fake:
        error = await failure(client_for(config(provider, fake.url)))
    assert error.type == "LlmMalformed" and not error.non_retryable


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_body_is_refused(provider, chunked):
    huge = json.dumps({"choices": [], "padding": "x" * MAX_BODY}).encode()
    with FakeLLM(provider, [status(200, huge, chunked=chunked)]) as fake:
        error = await failure(client_for(config(provider, fake.url)))
    assert error.type == "LlmMalformed" and "limit" in error.message


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_model_times_out_quickly_and_is_retryable(provider):
    with FakeLLM(provider, [delay(10, then=text("late"))]) as fake:
        started = time.monotonic()
        error = await failure(client_for(config(provider, fake.url, timeout=0.5)))
        elapsed = time.monotonic() - started
    assert error.type == "LlmUnavailable" and not error.non_retryable and elapsed < 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unreachable_server_is_retryable(provider):
    port = free_port()  # a port nobody listens on
    error = await failure(client_for(config(provider, f"http://127.0.0.1:{port}")))
    assert error.type == "LlmUnavailable" and not error.non_retryable


async def test_clients_close_only_what_they_opened():
    async with httpx.AsyncClient() as http:
        lent = client_for(config("openai", "http://127.0.0.1:1/v1"), http)
        assert isinstance(lent, OpenAIChat)
        await lent.aclose()
        assert not http.is_closed
    own = client_for(config("anthropic", "http://127.0.0.1:1"))
    assert isinstance(own, AnthropicMessages)
    await own.aclose()
    assert own._http.is_closed


# --- configuration ------------------------------------------------------------------------

def test_no_provider_means_no_model():
    assert LlmConfig.from_env({}) is None
    assert LlmConfig.from_env({"SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_PROVIDER": ""}) is None


def test_from_env_with_a_key_and_defaults():
    cfg = LlmConfig.from_env({"SELFHEAL_LLM_PROVIDER": "anthropic", "SELFHEAL_LLM_MODEL": "claude-x", "SELFHEAL_LLM_API_KEY": KEY})
    assert cfg.base_url == "https://api.anthropic.com" and cfg.api_key.get_secret_value() == KEY
    assert KEY not in repr(cfg) and KEY not in str(cfg) and KEY not in cfg.model_dump_json()
    local = LlmConfig.from_env({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "llama3.1",
                                "SELFHEAL_LLM_BASE_URL": "http://127.0.0.1:11434/v1/", "SELFHEAL_LLM_TIMEOUT": "5"})
    assert local.base_url == "http://127.0.0.1:11434/v1" and local.api_key is None and local.timeout == 5
    assert LlmConfig.from_env({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m"}).base_url == "https://api.openai.com/v1"


def test_from_env_with_a_key_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    cfg = LlmConfig.from_env({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m",
                              "SELFHEAL_LLM_API_KEY_FILE": str(key_file)})
    assert cfg.api_key.get_secret_value() == KEY and KEY not in repr(cfg)


@pytest.mark.parametrize("env, names", [
    ({"SELFHEAL_LLM_PROVIDER": "openai"}, ["SELFHEAL_LLM_MODEL"]),
    ({"SELFHEAL_LLM_PROVIDER": "gemini", "SELFHEAL_LLM_MODEL": "m"}, ["SELFHEAL_LLM_PROVIDER"]),
    ({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_API_KEY": KEY,
      "SELFHEAL_LLM_API_KEY_FILE": "/etc/key"}, ["SELFHEAL_LLM_API_KEY", "SELFHEAL_LLM_API_KEY_FILE"]),
    ({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_API_KEY_FILE": "/nonexistent/key"},
     ["SELFHEAL_LLM_API_KEY_FILE", "/nonexistent/key"]),
    ({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_BASE_URL": "ftp://models"},
     ["SELFHEAL_LLM_BASE_URL"]),
    ({"SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_TIMEOUT": "soon", "SELFHEAL_LLM_API_KEY": KEY},
     ["SELFHEAL_LLM_TIMEOUT"]),
])
def test_from_env_refuses_with_the_variable_named(env, names):
    with pytest.raises(ValueError) as info:
        LlmConfig.from_env(env)
    assert all(name in str(info.value) for name in names) and KEY not in str(info.value)


# --- the fake refuses what the real APIs refuse (else the round trips above prove little) --

TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_logs", "input": {}}]}
OPENAI_CALL = {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_logs", "arguments": "{}"}}]}


@pytest.mark.parametrize("provider, headers, body, expected", [
    ("anthropic", {"x-api-key": KEY}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
     "anthropic-version"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
     "top-level `system`"),
    ("anthropic", {}, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "alternate"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "a"}, TOOL_USE,
                                                                   {"role": "user", "content": "b"}]}, "without `tool_result`"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "a"}, TOOL_USE, {"role": "user", "content": [
        {"type": "text", "text": "b"}, {"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}]}, "must come first"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
     "non-empty"),
    ("anthropic", {}, {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "a"}],
                       "tools": [{"type": "function", "function": {"name": "x"}}]}, "tools.0"),
    ("openai", {}, {"model": "m", "messages": [{"role": "user", "content": "a"}, OPENAI_CALL, {"role": "user", "content": "b"}]},
     "did not have response messages: c1"),
    ("openai", {}, {"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": []}, "too short"),
    ("openai", {}, {"model": "m", "messages": [{"role": "user", "content": "a"}],
                    "tools": [{"name": "x", "input_schema": {"type": "object"}}]}, "tools[0]"),
    ("openai", {"authorization": "Bearer wrong"}, {"model": "m", "messages": [{"role": "user", "content": "a"}]}, "Incorrect API key"),
])
async def test_the_fake_refuses_what_the_provider_would(provider, headers, body, expected):
    api_key = KEY if provider == "openai" and headers else None
    if provider == "anthropic" and "x-api-key" not in headers:
        headers = {"anthropic-version": "2023-06-01", **headers}
    with FakeLLM(provider, [text("never")], api_key=api_key) as fake:
        async with httpx.AsyncClient() as http:
            path = "/chat/completions" if provider == "openai" else "/v1/messages"
            response = await http.post(fake.url + path, json=body, headers=headers)
    assert response.status_code in (400, 401), response.text
    error = response.json()
    if provider == "anthropic":
        assert error["type"] == "error" and set(error["error"]) == {"type", "message"}
    else:
        assert set(error["error"]) == {"message", "type", "param", "code"}
    assert expected in error["error"]["message"] and fake.rejections == [error["error"]["message"]]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_start_up_probe_names_what_is_wrong_with_the_endpoint(provider):
    port = free_port()  # a port nobody listens on
    with FakeLLM(provider, [text("unused")], api_key=KEY) as fake:
        fine = await client_for(config(provider, fake.url)).probe()
        no_v1 = await client_for(config(provider, fake.url + "/nothing-here")).probe()
        wrong_key = await client_for(config(provider, fake.url, api_key="sk-wrong")).probe()
        asked = [r.path for r in fake.requests]
    nobody = await client_for(config(provider, f"http://127.0.0.1:{port}")).probe(timeout=2)
    assert fine is None and asked[0] == "/v1/models" and not any(r.endswith("completions") for r in asked)
    assert "404" in no_v1 and "SELFHEAL_LLM_BASE_URL" in no_v1
    assert "refused the key" in wrong_key and "sk-wrong" not in wrong_key
    assert "does not answer" in nobody


def test_the_turn_timeout_follows_the_token_limit_unless_set():
    small, large = config("openai", "http://127.0.0.1:1/v1", max_tokens=256), config("openai", "http://x/v1", max_tokens=2048)
    assert small.turn_timeout < large.turn_timeout and large.turn_timeout >= 8 * 60  # minutes on a CPU
    assert config("openai", "http://x/v1", timeout=7).turn_timeout == 7


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_diagnose_replay_retries_a_turn_as_the_workflow_does_then_reports_it_failed(provider):
    from selfheal.activities.agent import ModelTurns
    from selfheal.contract import AgentInput, Diagnosis
    from selfheal.review.replay import OfflineLoop
    from selfheal.workflows.diagnosis_agent import MODEL_RETRY

    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # the policy's backoff, counted, not waited
        waited.append(seconds)

    from datetime import datetime, timezone

    inp = AgentInput(incident_id="i-1", alerts=[], candidates=[], sources=[], rules=Diagnosis(rationale="rules"),
                     since=datetime.now(timezone.utc))
    with FakeLLM(provider, [status(503)], api_key=KEY) as fake:
        result = await OfflineLoop(ModelTurns(client_for(config(provider, fake.url))), {}, sleep=sleep).run(inp)
        calls = len(fake.requests)
    assert result.failed and "HTTP 503" in result.note and result.diagnosis is None
    assert calls == MODEL_RETRY.maximum_attempts and len(waited) == calls - 1
    assert waited == sorted(waited)  # backing off
