"""Recorded histories must replay on today's code: a change that breaks determinism fails here.

Refresh the recordings after an intended change to the workflow's commands with
``.venv/bin/python -m pytest tests/workflows --record-histories`` and commit them.
"""

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from selfheal.worker import STRICT_RUNNER, WORKFLOW_RUNNER, WORKFLOWS

HISTORIES = sorted(p for p in (Path(__file__).parent / "histories").glob("*.json") if p.name != "workflow_ids.json")
# Original workflow ids (a history does not hold its own); older recordings used none.
IDS = json.loads((Path(__file__).parent / "histories" / "workflow_ids.json").read_text())


def test_histories_are_recorded_for_the_main_paths():
    names = {p.stem for p in HISTORIES}
    for scenario in (
        "test_instance_tier_restart_runs_by_itself_once_and_verifies",
        "test_service_tier_waits_refuses_unauthorised_then_executes_on_approval",
        "test_two_approver_tier_needs_two_distinct_people",
        "test_approval_window_reminds_escalates_then_expires_without_acting",
        "test_proposal_outside_the_matched_entries_never_executes",
    ):
        assert scenario in names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    history = WorkflowHistory.from_json(IDS.get(path.stem, path.stem), path.read_text())
    # The stricter sandbox first (modules re-imported per run), then the worker's own runner.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=STRICT_RUNNER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    # And the runner the worker uses.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
