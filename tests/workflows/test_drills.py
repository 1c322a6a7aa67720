"""Approval drills: beside a real approval request, a deliberately wrong proposal presented
like any other. A drill is a workflow of its own with no act stage: whatever is approved,
nothing runs; an approval is recorded missed, a rejection caught, and people are told."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.contract import IncidentSettings, PolicySnapshot
from selfheal.whitelist import load_whitelist_bytes
from selfheal.workflows.drill import DrillWorkflow, drill_id, wrong_proposal
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import (FAST, NotificationSink, alert, drill_of, running_worker, settings_for, start_incident,
                                     wait_status)
from tests.workflows.test_incident_aws import RULES, WHITELIST

PAYMENTS = """  - id: rollback-payments
    kind: ecs.rollback
    target: {cluster: demo, service: payments, task_definition: "payments:3", region: eu-west-1, account: "123456789012"}
    blast_radius: service
    approvers: {people: [alice, bob]}
    rate_limit: {max_executions: 5, window: 1h}
    cooldown: 0s
    match: ['alertname="PaymentsErrorRate"']
    verify: {timeout: 30s}
"""
DRILLED = (WHITELIST.replace("entries:\n", "drills: {rate: 1}\nentries:\n" + PAYMENTS, 1))
UNDRILLED = WHITELIST.replace("entries:\n", "entries:\n" + PAYMENTS, 1)


def _markers(history) -> list[bytes]:
    return [e.marker_recorded_event_attributes.SerializeToString() for e in history.events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]


def _activities(history) -> set[str]:
    return {e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}


async def test_an_approved_drill_is_missed_executes_nothing_and_says_so(client, task_queue, tmp_path, aws_world):
    assert DRILLED != WHITELIST
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=DRILLED, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            incident = await start_incident(client, task_queue, alert("CheckoutErrorRate"), incident_id="checkout-key~0123456789ab")
            await wait_status(incident, "awaiting_approval")
            drill = client.get_workflow_handle(await drill_of(incident), result_type=AuditRecord)
            assert drill.id.startswith("checkout-key~") and len(drill.id.split("~")[1]) == 12  # shaped like an incident
            await wait_status(drill, "awaiting_approval")
            while_waiting: AuditRecord = await drill.query(DrillWorkflow.audit)
            # Both people approve the drill: whatever is approved, a drill cannot execute.
            for person in ("alice", "bob"):
                try:
                    await drill.execute_update(DrillWorkflow.approve, Approval(approver=person))
                except WorkflowUpdateFailedError:
                    assert person == "bob"  # one approval settles a one-approval tier; the second is refused
            record: AuditRecord = await drill.result()
            await incident.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
            real: AuditRecord = await incident.result()
            drill_history = await drill.fetch_history()
    # While it waits, nothing says drill: the request is shaped like the real one.
    assert while_waiting.drill is None and while_waiting.outcome is None
    assert while_waiting.decision.kind == "needs_approval" and while_waiting.request.entry_id == "rollback-payments"
    requests = [n for n in sink.received if n["kind"] == "approval_requested"]
    by_id = {n["incident_id"]: n for n in requests}
    assert set(by_id) == {incident.id, drill.id}
    assert set(by_id[drill.id]["details"]) == set(by_id[incident.id]["details"])
    assert by_id[drill.id]["details"]["entry"] == "rollback-payments"
    # Missed, recorded per approver, and told.
    assert record.outcome == "drill_missed", record.outcome_detail
    assert record.drill.verdicts == {"alice": "missed"} and record.drill.of_incident == incident.id
    assert "CheckoutErrorRate" in record.drill.why_wrong and "rollback-payments" in record.drill.why_wrong
    assert record.remediation is None
    [told] = [n for n in sink.received if n["incident_id"] == drill.id and n["kind"] == "outcome"]
    assert "approval drill" in told["summary"] and told["details"]["approvals"] == "alice: missed"
    # No act stage: the drill ran nothing but notifications, asked the governor nothing.
    assert _activities(drill_history) == {"notify_webhook"}
    # The real incident went its own way.
    assert real.outcome == "remediated", real.outcome_detail
    assert real.remediation.entry_id == "rollback-checkout" and "checkout" in real.remediation.detail


async def test_a_rejected_drill_is_caught(client, task_queue, tmp_path, aws_world):
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=DRILLED, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            incident = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            drill = client.get_workflow_handle(await drill_of(incident), result_type=AuditRecord)
            await wait_status(drill, "awaiting_approval")
            # Someone the entry does not name is refused and recorded, as for any incident.
            with pytest.raises(WorkflowUpdateFailedError):
                await drill.execute_update(DrillWorkflow.approve, Approval(approver="mallory"))
            await drill.execute_update(DrillWorkflow.reject, Rejection(approver="bob", reason="payments is not alerting"))
            record: AuditRecord = await drill.result()
            await incident.execute_update(IncidentWorkflow.reject, Rejection(approver="alice"))
            await incident.result()
    assert record.outcome == "drill_caught" and record.drill.verdicts == {"bob": "caught"}
    assert [e.kind for e in record.approvals] == ["refused", "rejected"]
    assert aws_world.writes() == []


async def test_an_unanswered_drill_expires_and_nothing_runs(client, task_queue, tmp_path, aws_world):
    quick = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=1),
                                "escalate_after": timedelta(seconds=2), "expire_after": timedelta(seconds=3)})
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, incident=quick, whitelist=DRILLED, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            incident = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            drill = client.get_workflow_handle(await drill_of(incident), result_type=AuditRecord)
            record: AuditRecord = await drill.result()
            assert (await incident.result()).outcome == "expired"
    assert record.outcome == "drill_unanswered" and record.drill.verdicts == {}
    assert sink.kinds(drill.id) == ["approval_requested", "reminder", "escalation", "outcome"]  # like any request
    assert aws_world.writes() == []


async def test_without_drills_no_drill_starts_and_no_marker_is_written(client, task_queue, tmp_path, aws_world):
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=UNDRILLED, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            incident = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            await wait_status(incident, "awaiting_approval")
            await incident.execute_update(IncidentWorkflow.reject, Rejection(approver="alice"))
            await incident.result()
            history = await incident.fetch_history()
    kinds = {e.event_type for e in history.events}
    assert EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in kinds
    assert _markers(history) == []  # 1.0 starts from one clean history: no patch markers
    assert {n["incident_id"] for n in sink.received} == {incident.id}


# --- choosing the wrong proposal (pure) --------------------------------------------------

def _snapshot(text: str) -> PolicySnapshot:
    loaded = load_whitelist_bytes(text.encode(), "test.yaml")
    return PolicySnapshot(whitelist=loaded.whitelist.excerpt([]), sha256=loaded.sha256, source="test.yaml",
                          settings=FAST)


NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


def test_the_wrong_proposal_is_an_active_unmatched_entry_that_needs_people():
    snap = _snapshot(DRILLED)
    alerts = [alert("CheckoutErrorRate")]
    chosen = wrong_proposal(snap, alerts, ["rollback-checkout"], 0.99, NOW)
    assert chosen is not None
    request, decision, why = chosen
    # The only candidate: scale and reboot need a read of the world, checkout is what the alerts matched.
    assert request.entry_id == "rollback-payments" and decision.kind == "needs_approval"
    assert decision.approvers == ["alice", "bob"] and "do not match rollback-payments" in why
    # An alert that matches the payments entry leaves nothing wrong to propose.
    assert wrong_proposal(snap, [alert("CheckoutErrorRate"), alert("PaymentsErrorRate")],
                          ["rollback-checkout", "rollback-payments"], 0.0, NOW) is None


def test_shadow_and_automatic_entries_are_never_drills():
    shadow = DRILLED.replace("  - id: rollback-payments\n    kind: ecs.rollback\n",
                             "  - id: rollback-payments\n    kind: ecs.rollback\n    mode: shadow\n")
    assert wrong_proposal(_snapshot(shadow), [alert("CheckoutErrorRate")], ["rollback-checkout"], 0.5, NOW) is None
    automatic = DRILLED.replace("    target: {cluster: demo, service: payments, task_definition: \"payments:3\", region: eu-west-1, account: \"123456789012\"}\n    blast_radius: service",
                                "    target: {cluster: demo, service: payments, task_definition: \"payments:3\", region: eu-west-1, account: \"123456789012\"}\n    blast_radius: instance")
    assert automatic != DRILLED
    assert wrong_proposal(_snapshot(automatic), [alert("CheckoutErrorRate")], ["rollback-checkout"], 0.5, NOW) is None


def test_drill_ids_keep_the_alert_key():
    assert drill_id("svc-abc~0123456789ab", "f" * 32) == "svc-abc~ffffffffffff"
    assert drill_id("no-episode", "a" * 32) == "no-episode~aaaaaaaaaaaa"


@pytest.mark.parametrize("rate", [-0.1, 1.5, "often"])
def test_a_drill_rate_outside_0_to_1_refuses_to_load(rate):
    from selfheal.whitelist import WhitelistError

    with pytest.raises(WhitelistError) as err:
        load_whitelist_bytes(DRILLED.replace("drills: {rate: 1}", f"drills: {{rate: {rate}}}").encode(), "test.yaml")
    assert "drills" in str(err.value) and "rate" in str(err.value)
