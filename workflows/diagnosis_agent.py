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
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from selfheal.contract import AgentInput, AgentResult, EvidenceItem, EvidenceRead, ModelTurn, ModelTurnInput
    from selfheal.contract.activities import model_turn, read_evidence
    from selfheal.contract.workflows import DIAGNOSIS_WORKFLOW
    from selfheal.workflows.agent_loop import AgentLoop, ReadFailed, TurnFailed
    from selfheal.workflows.causes import cause_text

# Timeouts, 429 and 5xx answers retry with backoff as ordinary activity retries; a refusal
# (401, 400: a configuration problem) does not.
MODEL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=6,
                          non_retryable_error_types=["LlmRefused"])
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=4,
                         non_retryable_error_types=["EvidenceRefused", "OutOfPolicy", "InvalidEvidenceRequest"])
TURN_MARGIN = timedelta(seconds=30)
READ_TIMEOUT = timedelta(seconds=60)
HEARTBEAT = timedelta(seconds=10)


class _DurableLoop(AgentLoop):
    def __init__(self, turn_timeout: timedelta) -> None:
        super().__init__()
        self._turn_timeout = turn_timeout

    async def turn(self, inp: ModelTurnInput, step: int) -> ModelTurn:
        try:
            return await workflow.execute_activity(
                model_turn, inp, start_to_close_timeout=self._turn_timeout, heartbeat_timeout=HEARTBEAT,
                retry_policy=MODEL_RETRY, summary=f"model turn {step}")
        except ActivityError as exc:
            raise TurnFailed(cause_text(exc)) from None

    async def read_items(self, ref: str, entry_id: str | None, inp: AgentInput) -> list[EvidenceItem]:
        try:
            return await workflow.execute_activity(
                read_evidence, EvidenceRead(ref=ref, entry_id=entry_id, alerts=inp.alerts, since=inp.since,
                                            until=workflow.now()),
                start_to_close_timeout=READ_TIMEOUT, heartbeat_timeout=HEARTBEAT, retry_policy=READ_RETRY,
                summary=f"read {ref}")
        except ActivityError as exc:
            raise ReadFailed(cause_text(exc)) from None

    def now(self):
        return workflow.now()


@workflow.defn(name=DIAGNOSIS_WORKFLOW)
class DiagnosisAgentWorkflow:
    @workflow.run
    async def run(self, inp: AgentInput) -> AgentResult:
        # The turn's own bound (LlmConfig's, from the token limit) plus a margin for the
        # activity around it.
        return await _DurableLoop(timedelta(seconds=inp.bounds.turn_timeout_seconds) + TURN_MARGIN).run(inp)
