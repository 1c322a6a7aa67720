"""A rubber-stamp signal: an approval sooner than the tier's min_review after the request is
flagged in the audit record and the outcome notification. It still counts: the flag is for
people reviewing how approvals are given, never a second gate."""

from __future__ import annotations

from selfheal.contract import Approval, AuditRecord
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import NotificationSink, alert, running_worker, settings_for, start_incident, wait_status
from tests.workflows.test_incident_aws import RULES, WHITELIST


async def approved_at_once(client, task_queue, tmp_path, aws_world, min_review: str) -> tuple[AuditRecord, list[dict]]:
    whitelist = WHITELIST.replace("  service: {approvals: 1, channels: [ssh, slack, token, unverified]}",
                                  f"  service: {{approvals: 1, channels: [ssh, slack, token, unverified], min_review: {min_review}}}")
    assert whitelist != WHITELIST
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=whitelist, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            handle = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            await wait_status(handle, "awaiting_approval")
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
            record = await handle.result()
    return record, [n for n in sink.received if n["kind"] == "outcome"]


async def test_an_approval_sooner_than_min_review_is_flagged_and_still_counts(client, task_queue, tmp_path, aws_world):
    record, [outcome] = await approved_at_once(client, task_queue, tmp_path, aws_world, "1h")
    [approval] = record.approvals
    assert approval.fast is True and approval.after_seconds < 3600
    assert record.outcome == "remediated", record.outcome_detail
    assert "(fast: " in outcome["details"]["approvals"]


async def test_without_min_review_nothing_is_flagged(client, task_queue, tmp_path, aws_world):
    record, [outcome] = await approved_at_once(client, task_queue, tmp_path, aws_world, "0s")
    assert [a.fast for a in record.approvals] == [False]
    assert "fast" not in outcome["details"]["approvals"]
