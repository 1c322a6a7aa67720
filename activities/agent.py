"""The diagnosis agent's model turn as an activity: redact, ask the model, redact again.

Everything sent to the provider and everything it answers passes through the redactor
before it leaves the machine or enters the agent's history. Timeouts, 429 and 5xx answers
are ordinary retryable activity failures (``activities/llm.py`` maps them); the workflow's
retry policy backs off.
"""

from __future__ import annotations

from selfheal.activities.heartbeat import heartbeating
from selfheal.contract import ChatMessage, ModelTurn, ModelTurnInput
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.redact import DEFAULT, Redactor


class ModelTurns:
    def __init__(self, client, redactor: Redactor = DEFAULT):
        self._client = client  # OpenAIChat or AnthropicMessages (activities/llm.py)
        self._redact = redactor

    def _message(self, m: ChatMessage) -> ChatMessage:
        return m.model_copy(update={
            "content": self._redact.text(m.content),
            "tool_calls": [c.model_copy(update={"arguments": self._redact.value(c.arguments), "raw": self._redact.text(c.raw)})
                           for c in m.tool_calls],
        })

    @implements(declared.model_turn)
    @heartbeating
    async def model_turn(self, inp: ModelTurnInput) -> ModelTurn:
        sent = inp.model_copy(update={"messages": [self._message(m) for m in inp.messages]})
        turn: ModelTurn = await self._client.turn(sent)
        answer = self._message(ChatMessage(role="assistant", content=turn.content, tool_calls=turn.tool_calls))
        return turn.model_copy(update={"content": answer.content, "tool_calls": answer.tool_calls})
