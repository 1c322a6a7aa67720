"""The diagnosis agent's side of the contract: its conversation with the model
(provider-neutral; ``activities/llm.py`` maps it to the OpenAI and Anthropic wire
formats), the evidence it may read and how, its bounds, and its result.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from selfheal.contract.base import Model
from selfheal.contract.incident import Alert, Diagnosis


class ToolCall(Model):
    """A tool the model asked for. ``arguments`` is the parsed JSON object; a call whose
    arguments were not a JSON object keeps them as text in ``raw`` and an empty dict."""

    id: Annotated[str, Field(max_length=256)]
    name: Annotated[str, Field(max_length=256)]
    arguments: dict[str, Any] = {}
    raw: Annotated[str, Field(max_length=16_384)] = ""


class ChatMessage(Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = []      # assistant turns
    tool_call_id: str | None = None      # tool results answer this call


class ToolSpec(Model):
    name: str
    description: str
    parameters: dict[str, Any]           # a JSON schema object


class ModelTurnInput(Model):
    messages: list[ChatMessage]
    tools: list[ToolSpec] = []
    max_tokens: int = Field(default=2048, ge=1, le=32_768)


class ModelTurn(Model):
    content: str = ""
    tool_calls: list[ToolCall] = []
    stop_reason: str = ""                # as the provider said it (stop, tool_calls, end_turn, tool_use, length...)
    usage: dict[str, int] = {}


class EvidenceRead(Model):
    """One read of a configured evidence source (``read_evidence``), by its reference."""

    ref: Annotated[str, Field(max_length=80)]        # file:ID, journal:ID, prom:ID, aws
    entry_id: str | None = None                      # the candidate entry (for aws)
    alerts: list[Alert]
    since: AwareDatetime
    until: AwareDatetime


class Candidate(Model):
    """A whitelist entry the alerts matched, as the model sees it: no target, no host."""

    id: str
    kind: str
    description: str = ""
    params: dict[str, str] = {}   # parameter name -> its type, as the entry's kind defines it


class SourceInfo(Model):
    """An evidence source the model may read, by id only (never a path, URL or query)."""

    ref: str
    kind: str
    description: str = ""


class EvidenceCatalog(Model):
    """The reviewed evidence configuration as an incident records it: its hash, and which
    sources (by id and description only) each entry or signature may read."""

    sha256: str
    source: str = ""
    sources: list[SourceInfo] = []
    allow: dict[str, list[str]] = {}

    def allowed(self, ids) -> list[SourceInfo]:
        refs = {ref for i in ids for ref in self.allow.get(i, [])}
        return [s for s in self.sources if s.ref in refs]


class AgentBounds(Model):
    max_steps: int = Field(default=8, ge=1, le=32)             # model turns
    max_read_bytes: int = Field(default=16_384, ge=256, le=65_536)  # per evidence read, as sent to the model
    max_transcript_bytes: int = Field(default=262_144, ge=4_096, le=1_048_576)
    time_budget_seconds: float = Field(default=300, gt=0, le=3600)
    max_invalid_answers: int = Field(default=2, ge=0, le=8)    # malformed or out-of-candidate answers retried
    # One model turn, from request to the whole answer: the worker derives it from the
    # model's token limit (a 2,048-token answer takes minutes on a CPU), see LlmConfig.
    turn_timeout_seconds: float = Field(default=120, gt=0, le=3600)


class AgentInput(Model):
    incident_id: str
    alerts: list[Alert]
    candidates: list[Candidate]
    sources: list[SourceInfo]
    rules: Diagnosis                  # the rules diagnoser's result, shown to the model and kept beside its own
    aws_entry: str | None = None      # the candidate whose AWS evidence the "aws" source reads
    since: AwareDatetime
    bounds: AgentBounds = AgentBounds()


class AgentResult(Model):
    diagnosis: Diagnosis | None = None   # None: no valid answer within the bounds; people decide
    note: str = ""                       # why it ended
    steps: int = 0
    reads: list[str] = []                # evidence source refs read, in order
    refused: list[str] = []              # answers and tool calls refused, and why
    transcript_bytes: int = 0
    failed: bool = False                 # the model could not be used (errors, timeouts): ``note`` says why



class AwsEvidenceRequest(Model):
    """``read_aws_evidence``'s input: whose AWS evidence to read (the entry's ECS events and
    deployments, Auto Scaling activities, alarm history, logs), over which window."""

    entry_id: str
    since: datetime
    until: datetime
    alarm_name: str | None = None
