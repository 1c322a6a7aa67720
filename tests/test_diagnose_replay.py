"""`selfheal diagnose-replay`: past incidents' recorded evidence through today's diagnoser,
offline, as a team would run it before switching a model, a prompt or a signature."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.fake_llm import FakeLLM, tool_call
from tests.workflows.test_incident_llm import run, settings, submit

ROOT = Path(__file__).resolve().parents[1]


def replay(temporal_env, env: dict, *args: str) -> dict:
    cli = Path(sys.executable).parent / "selfheal"
    done = subprocess.run([str(cli), "diagnose-replay", "--since", "1d", "--json", *args,
                           "--address", temporal_env.client.service_client.config.target_host],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def history_length(client, workflow_id: str) -> int:
    return len((await client.get_workflow_handle(workflow_id).fetch_history()).events)


async def test_replay_compares_then_and_now_on_the_record_and_acts_on_nothing(temporal_env, client, task_queue, tmp_path, aws_world):
    script = [tool_call("read_evidence", {"source": "file:checkout-log"}), submit("scale-queue-workers", {"desired_capacity": 3})]
    record, _ = await run(client, task_queue, tmp_path, aws_world, script, approve=["alice"])
    assert record.outcome == "remediated"
    lengths = {i: await history_length(client, i) for i in (record.incident_id, f"{record.incident_id}/diagnosis")}
    writes = aws_world.writes()
    # Remove the log from disk: a replay reads the record, never the file.
    (tmp_path / "checkout.log").unlink()
    env = {"SELFHEAL_WHITELIST": str(tmp_path / "wl.yaml"), "SELFHEAL_DIAGNOSIS": str(tmp_path / "rules.yaml"),
           "SELFHEAL_EVIDENCE": str(tmp_path / "evidence.yaml")}

    rules = replay(temporal_env, {**env, "SELFHEAL_DIAGNOSER": "rules"})
    [mine] = [r for r in rules["incidents"] if r.get("incident") == record.incident_id]
    assert "skipped" not in mine, mine
    assert mine["then"] == {"proposal": "scale-queue-workers", "params": {"desired_capacity": 3}}
    assert mine["then_rules"] == {"proposal": "scale-queue-workers", "params": {"desired_capacity": 4}}
    assert mine["now"] == mine["then_rules"] and mine["changed"] is True
    assert mine["people"] == "approved by alice via unverified"
    assert "history reaches back" in rules["history"]

    # A different model, replayed: it reads the recorded file, then asks for a source never read.
    new_model = [tool_call("read_evidence", {"source": "file:checkout-log"}), tool_call("read_evidence", {"source": "aws"}),
                 submit("rollback-checkout", rationale="the deploy, not the queue")]
    with FakeLLM("openai", new_model, api_key="sk-test") as llm:
        model = replay(temporal_env, {**env, "SELFHEAL_DIAGNOSER": "llm", "SELFHEAL_LLM_PROVIDER": "openai",
                                      "SELFHEAL_LLM_BASE_URL": llm.url, "SELFHEAL_LLM_MODEL": "next-model",
                                      "SELFHEAL_LLM_API_KEY": "sk-test"})
    [mine] = [r for r in model["incidents"] if r.get("incident") == record.incident_id]
    assert mine["now"]["proposal"] == "rollback-checkout" and mine["changed"] is True
    assert mine["recorded_reads"]["file:checkout-log"] >= 5
    shown = json.dumps([r.body for r in llm.requests])
    assert "backlog 18000 jobs" in shown  # the recorded line, from history (the file is gone)
    assert "not in the record: this incident never read aws" in shown
    assert llm.rejections == []
    # Nothing acted: no new events in the incident or its agent, no AWS writes.
    assert {i: await history_length(client, i) for i in lengths} == lengths
    assert aws_world.writes() == writes


async def test_replay_prints_then_now_and_people_for_a_person(temporal_env, client, task_queue, tmp_path, aws_world):
    record, _ = await run(client, task_queue, tmp_path, aws_world, [submit(None, rationale="nothing fits")])
    cli = Path(sys.executable).parent / "selfheal"
    env = {"SELFHEAL_WHITELIST": str(tmp_path / "wl.yaml"), "SELFHEAL_DIAGNOSIS": str(tmp_path / "rules.yaml"),
           "SELFHEAL_DIAGNOSER": "rules"}
    done = subprocess.run([str(cli), "diagnose-replay", "--since", "400d", "--address",
                           temporal_env.client.service_client.config.target_host],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    block = done.stdout.split(record.incident_id, 1)[1].split("\n\n")[0]
    assert "then:   nothing (rules: scale-queue-workers {'desired_capacity': 4})" in block
    assert "now:    scale-queue-workers {'desired_capacity': 4}  [rules]  CHANGED" in block
    assert "people: escalated to people" in block
    assert "asks for more than it keeps" in done.stdout  # 400 days is past the namespace's retention
