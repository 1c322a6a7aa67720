"""Shadow mode: an entry decided as usual that never executes. The incident ends `shadowed`
with what would have run and with whose approval; it pages nobody and reserves nothing;
the executors refuse it and the generated grants give it reads only."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import pytest

from selfheal.activities.aws_remediate import AwsRemediator
from selfheal.grants.iam import policy_document
from selfheal.contract import ActionRequest, AuditRecord, RemediationInput
from selfheal.whitelist import load_whitelist_bytes, target_of
from tests.workflows.helpers import NotificationSink, alert, running_worker, settings_for, start_incident
from tests.workflows.test_incident_aws import RULES, WHITELIST

SHADOW = (WHITELIST.replace("  - id: rollback-checkout\n    kind: ecs.rollback\n",
                            "  - id: rollback-checkout\n    kind: ecs.rollback\n    mode: shadow\n")
          .replace("  - id: scale-queue-workers\n    kind: asg.scale\n", "  - id: scale-queue-workers\n    kind: asg.scale\n    mode: shadow\n"))


async def test_a_shadow_entry_is_decided_recorded_and_never_executed(client, task_queue, tmp_path, aws_world):
    assert SHADOW.count("mode: shadow") == 2
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=SHADOW, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()):
            ecs = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            asg = await start_incident(client, task_queue, alert("QueueBacklogHigh"))
            records: list[AuditRecord] = [await ecs.result(), await asg.result()]
            histories = [await ecs.fetch_history(), await asg.fetch_history()]
    for record in records:
        assert record.outcome == "shadowed" and "nothing was executed" in record.outcome_detail
        assert record.remediation is None and record.approvals == []
    assert "after 1 approval(s) from alice, bob (service tier)" in records[0].outcome_detail
    assert "by itself (instance tier)" in records[1].outcome_detail
    assert sink.received == []  # pages nobody
    assert aws_world.writes() == []
    scheduled = {e.activity_task_scheduled_event_attributes.activity_type.name
                 for h in histories for e in h.events if e.HasField("activity_task_scheduled_event_attributes")}
    assert scheduled == {"load_policy", "diagnose", "read_world"}  # reads only: no governor, no executor
    assert records[1].request.params == {"desired_capacity": 4, "current_capacity": 2}  # it read the group


async def test_executors_refuse_a_shadow_entry_and_grants_give_it_reads_only(aws_world):
    loaded = load_whitelist_bytes(SHADOW.encode(), "shadow.yaml")
    entry = loaded.whitelist.entry("rollback-checkout")
    inp = RemediationInput(incident_id="i", idempotency_key="i/act", whitelist_sha256=loaded.sha256,
                           request=ActionRequest(entry_id=entry.id, target=target_of(entry)))
    with pytest.raises(ApplicationError, match="shadow mode"):
        await ActivityEnvironment().run(AwsRemediator(aws_world.clients(), loaded).rollback_ecs_service, inp)
    assert aws_world.calls() == []
    statements = policy_document(loaded)["Statement"]
    shadow = [s for s in statements if s["Sid"].startswith(("ShadowRollbackCheckout", "ShadowScaleQueueWorkers"))]
    assert shadow and not any(s["Sid"].startswith(("RollbackCheckout", "ScaleQueueWorkers")) for s in statements)
    granted = {a for s in shadow for a in s["Action"]}
    assert "autoscaling:DescribeAutoScalingGroups" in granted  # what its decision reads
    assert not granted & {"ecs:UpdateService", "autoscaling:SetDesiredCapacity", "ec2:RebootInstances", "ec2:CreateTags"}
