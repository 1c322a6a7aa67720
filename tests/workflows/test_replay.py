"""Recorded histories must replay on today's code: a change that breaks determinism fails here.

Refresh the recordings after an intended change to the workflow's commands with
``.venv/bin/python -m pytest tests/workflows --record-histories`` and commit them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio import workflow
from temporalio.worker import Replayer

from selfheal.codec_free_runner import CodecFreeRunner
from selfheal.worker import STRICT_RUNNER, WORKFLOW_RUNNER, WORKFLOWS
from selfheal.contract import AuditRecord, IncidentInput
from selfheal.contract.workflows import REMEDIATION_FAILED
from selfheal.workflows.incident import IncidentWorkflow

HISTORIES = sorted(p for p in (Path(__file__).parent / "histories").glob("*.json") if p.name != "workflow_ids.json")
# Original workflow ids (a history does not hold its own); older recordings used none.
IDS = json.loads((Path(__file__).parent / "histories" / "workflow_ids.json").read_text())


def _result(path: Path) -> dict | None:
    """The workflow's result (an incident's AuditRecord), also when its remediation failed
    (the record is the failure's details), or None for a run that ended otherwise."""
    last = WorkflowHistory.from_json("-", path.read_text()).events[-1]
    if last.HasField("workflow_execution_completed_event_attributes"):
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
    elif last.HasField("workflow_execution_failed_event_attributes"):
        failure = last.workflow_execution_failed_event_attributes.failure
        if failure.application_failure_info.type != REMEDIATION_FAILED:
            return None
        payloads = failure.application_failure_info.details.payloads
    else:
        return None
    return json.loads(payloads[0].data) if payloads else None


def test_histories_cover_every_outcome_every_kind_and_both_governors():
    results = [r for r in map(_result, HISTORIES) if isinstance(r, dict) and "outcome" in r]
    outcomes = {r["outcome"] for r in results}
    assert outcomes >= {"remediated", "no_remedy", "denied", "rejected", "expired", "verification_failed", "failed",
                        "resolved_without_action", "shadowed", "drill_caught", "drill_missed", "drill_unanswered"}, outcomes
    acted = {r["remediation"]["kind"] for r in results if r.get("remediation")}
    assert acted >= {"systemd.restart", "ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback"}, acted
    assert any(r.get("agent") for r in results)  # a model's diagnosis, in its child workflow too
    assert any(p.stem.endswith("-agent") for p in HISTORIES)
    names = {p.stem for p in HISTORIES}
    assert {"governor-continued-as-new", "governor-entry-continued-as-new"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(IDS.get(path.stem, path.stem), path.read_text())
    # The stricter sandbox first (modules re-imported per run), then the worker's own runner.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=STRICT_RUNNER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    # And the runner the worker uses (selfheal.worker: no codec, so no trips into the sandbox for one).
    runner = CodecFreeRunner.for_converter(pydantic_data_converter, WORKFLOW_RUNNER)
    assert isinstance(runner, CodecFreeRunner)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=runner)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name="IncidentWorkflow", sandboxed=False)
class ChangedIncident(IncidentWorkflow):
    """IncidentWorkflow with one command more than the recorded histories have."""

    @workflow.run
    async def run(self, inp: IncidentInput) -> AuditRecord:
        await workflow.sleep(timedelta(seconds=1))  # a timer before the first activity
        return await super().run(inp)


async def test_a_change_to_the_commands_fails_the_replay():
    """The replay above would catch a change that breaks a recorded history: here one is
    made on purpose and the same replay refuses it, while the code as it is replays."""
    name = "test_instance_tier_restart_runs_by_itself_once_and_verifies"
    path = Path(__file__).parent / "histories" / f"{name}.json"
    history = WorkflowHistory.from_json(IDS.get(name, name), path.read_text())
    others = [w for w in WORKFLOWS if w is not IncidentWorkflow]
    result = await Replayer(workflows=[ChangedIncident, *others], data_converter=pydantic_data_converter).replay_workflow(
        history, raise_on_replay_failure=False)
    assert result.replay_failure is not None and "nondetermin" in str(result.replay_failure).lower(), result.replay_failure
    unchanged = await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                               workflow_runner=WORKFLOW_RUNNER).replay_workflow(history, raise_on_replay_failure=False)
    assert unchanged.replay_failure is None, unchanged.replay_failure
