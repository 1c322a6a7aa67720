"""DiagnosisAgentWorkflow: the language-model diagnosis as a durable, read-only agent loop.

A child of the incident, so its history (every prompt turn and every evidence read, the
audit's "observed / concluded") stays apart from the incident's and small. Each model
turn is an activity (``model_turn``), and so is each evidence read the model asks for
(``read_evidence``). The model's tools read, and submit an answer; there is no tool that
writes. The loop (``agent_loop.AgentLoop``) is bounded in turns, bytes per read,
transcript size and time; a malformed answer, or one outside the candidates, is refused
and retried a bounded number of times, then the incident goes to people with the evidence
and the rules' diagnosis.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from selfheal.models import AgentInput, AgentResult, EvidenceItem, EvidenceRead, ModelTurn, ModelTurnInput
    from selfheal.workflows.agent_loop import AgentLoop

# Timeouts, 429 and 5xx answers retry with backoff as ordinary activity retries; a refusal
# (401, 400: a configuration problem) does not.
MODEL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=6,
                          non_retryable_error_types=["LlmRefused"])
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=4,
                         non_retryable_error_types=["EvidenceRefused", "OutOfPolicy", "InvalidEvidenceRequest"])
MODEL_TIMEOUT = timedelta(seconds=120)
READ_TIMEOUT = timedelta(seconds=60)
HEARTBEAT = timedelta(seconds=10)


class _DurableLoop(AgentLoop):
    async def turn(self, inp: ModelTurnInput, step: int) -> ModelTurn:
        return await workflow.execute_activity(
            "model_turn", inp, start_to_close_timeout=MODEL_TIMEOUT, heartbeat_timeout=HEARTBEAT,
            retry_policy=MODEL_RETRY, result_type=ModelTurn, summary=f"model turn {step}")

    async def read_items(self, ref: str, entry_id: str | None, inp: AgentInput) -> list[EvidenceItem]:
        return await workflow.execute_activity(
            "read_evidence", EvidenceRead(ref=ref, entry_id=entry_id, alerts=inp.alerts, since=inp.since, until=workflow.now()),
            start_to_close_timeout=READ_TIMEOUT, heartbeat_timeout=HEARTBEAT, retry_policy=READ_RETRY,
            result_type=list[EvidenceItem], summary=f"read {ref}")

    def now(self):
        return workflow.now()


@workflow.defn
class DiagnosisAgentWorkflow:
    @workflow.run
    async def run(self, inp: AgentInput) -> AgentResult:
        return await _DurableLoop().run(inp)
