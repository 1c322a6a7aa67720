"""Incidents that act on AWS, end to end through IncidentWorkflow, against moto_server
(a local simulation, started and stopped by the tests): an approved ECS rollback, an
automatic in-bounds Auto Scaling change, a two-approver EC2 reboot, an approved Lambda
rollback, and an approved action on an AWS that cannot be reached."""

from __future__ import annotations

from selfheal.contract import Approval, AuditRecord
from selfheal.dev.aws_sim import DEMO_IMAGE
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import TYPED_NAMES_COUNT, alert, ended, running_worker, settings_for, start_incident, wait_status

PLACE = 'region: eu-west-1, account: "123456789012"'
WHITELIST = f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
{TYPED_NAMES_COUNT}entries:
  - id: rollback-checkout
    kind: ecs.rollback
    target: {{cluster: demo, service: checkout, task_definition: "checkout:6", {PLACE}}}
    blast_radius: service
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 5, window: 1h}}
    cooldown: 0s
    match: ['alertname="CheckoutErrorRate"']
    verify: {{timeout: 30s}}
  - id: scale-queue-workers
    kind: asg.scale
    target: {{group: demo-queue-workers, {PLACE}}}
    bounds: {{min_capacity: 2, max_capacity: 8, max_step: 2}}
    blast_radius: instance
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 5, window: 1h}}
    cooldown: 0s
    match: ['alertname=~"QueueBacklogHigh|QueueBacklogHuge"']
    autonomy: {{max_targets: 5}}
    verify: {{timeout: 30s}}
  - id: reboot-batch-hosts
    kind: ec2.reboot
    target: {{tags: {{Role: batch, Env: demo}}, max_instances: 2, {PLACE}}}
    blast_radius: fleet
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 5, window: 1h}}
    cooldown: 0s
    match: ['alertname="BatchAgentSilent"']
    verify: {{timeout: 30s}}
"""
RULES = """
signatures:
  - id: checkout-bad-deploy
    summary: errors rose right after a deploy
    match: ['alertname="CheckoutErrorRate"']
    propose: rollback-checkout
  - id: backlog
    summary: the queue grows faster than the workers drain it
    match: ['alertname="QueueBacklogHigh"']
    propose: scale-queue-workers
    params: {desired_capacity: 4, current_capacity: 8}
  - id: backlog-huge
    summary: a diagnosis that asks for far too much
    match: ['alertname="QueueBacklogHuge"']
    propose: scale-queue-workers
    params: {desired_capacity: 500}
  - id: batch-agent
    summary: the batch agent stopped reporting
    match: ['alertname="BatchAgentSilent"']
    propose: reboot-batch-hosts
"""


# Apart from WHITELIST, which other tests build on (test_drills chooses among its entries).
LAMBDA_WHITELIST = WHITELIST + f"""  - id: rollback-payments-webhook
    kind: lambda.rollback
    target: {{function: payments-webhook, alias: live, version: "2", {PLACE}}}
    blast_radius: service
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 1, window: 1h}}
    cooldown: 0s
    match: ['alertname="PaymentsWebhookErrors"']
    verify: {{timeout: 30s}}
"""
LAMBDA_RULES = RULES + """  - id: payments-bad-release
    summary: the webhook's errors began with its latest version
    match: ['alertname="PaymentsWebhookErrors"']
    propose: rollback-payments-webhook
"""


def settings(tmp_path, task_queue, whitelist: str = WHITELIST, rules: str = RULES):
    return settings_for(tmp_path, "unused.service", task_queue, None, whitelist=whitelist, rules=rules)


async def test_an_approved_ecs_rollback_points_the_service_back_and_verifies(client, task_queue, tmp_path, aws_world):
    async with running_worker(client, settings(tmp_path, task_queue), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        await wait_status(handle, "awaiting_approval")
        assert aws_world.writes() == []  # nothing acts before a person approves
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated", record.outcome_detail
    assert record.remediation.action == "executed"
    assert record.remediation.before.facts["task_definition"] == "checkout:7"
    assert record.remediation.after.facts["task_definition"] == "checkout:6"
    assert record.request.target["account"] == "123456789012" and record.request.target["region"] == "eu-west-1"
    assert [c.ok for c in record.verification.checks] == [True]
    assert aws_world.writes() == ["UpdateService"]


async def test_an_approved_lambda_rollback_points_the_alias_back_and_verifies(client, task_queue, tmp_path, aws_world):
    async with running_worker(client, settings(tmp_path, task_queue, LAMBDA_WHITELIST, LAMBDA_RULES), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, alert("PaymentsWebhookErrors", region="eu-west-1"))
        await wait_status(handle, "awaiting_approval")
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated", record.outcome_detail
    assert record.remediation.kind == "lambda.rollback" and record.remediation.action == "executed"
    assert aws_world.writes() == ["UpdateAlias"]
    alias = aws_world.client("lambda").get_alias(FunctionName="payments-webhook", Name="live")
    assert alias["FunctionVersion"] == "2"


async def test_an_approved_action_on_an_unreachable_aws_ends_failed_and_people_are_told(client, task_queue, tmp_path):
    # offline AWS (the helpers' default): every call fails at once, non-retryably.
    async with running_worker(client, settings(tmp_path, task_queue)):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        await wait_status(handle, "awaiting_approval")
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record: AuditRecord = await ended(handle)
    assert record.outcome == "failed" and "no AWS in this test" in record.outcome_detail, record.outcome_detail
    assert record.remediation is None


async def test_an_in_bounds_scale_runs_by_itself_with_the_capacity_the_workflow_read(client, task_queue, tmp_path, aws_world):
    async with running_worker(client, settings(tmp_path, task_queue), aws=aws_world.clients()):
        record: AuditRecord = await (await start_incident(client, task_queue, alert("QueueBacklogHigh"))).result()
    assert record.outcome == "remediated", record.outcome_detail
    assert record.decision.kind == "auto"
    # The diagnosis said current_capacity 8; the workflow read 2 and used that.
    assert record.observed.facts["desired_capacity"] == 2
    assert record.request.params == {"desired_capacity": 4, "current_capacity": 2}
    assert aws_world.writes() == ["SetDesiredCapacity"]
    group = aws_world.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-queue-workers"])
    assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 4


async def test_scale_to_500_is_denied_never_clamped(client, task_queue, tmp_path, aws_world):
    async with running_worker(client, settings(tmp_path, task_queue), aws=aws_world.clients()):
        record: AuditRecord = await (await start_incident(client, task_queue, alert("QueueBacklogHuge"))).result()
    assert record.outcome == "denied" and record.decision.rule == "bounds.max_capacity"
    assert aws_world.writes() == []


async def test_a_two_approver_reboot_acts_on_the_alerts_tagged_instances_only(client, task_queue, tmp_path, aws_world):
    ec2 = aws_world.client("ec2")
    stranger = ec2.run_instances(ImageId=DEMO_IMAGE, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    first, second, _ = aws_world.seeded["batch_instances"]
    aws_world.start_recording()
    alerts = [alert("BatchAgentSilent", instance_id=first), alert("BatchAgentSilent", instance=f"{second}:9100"),
              alert("BatchAgentSilent", instance_id=stranger)]
    async with running_worker(client, settings(tmp_path, task_queue), aws=aws_world.clients()):
        handle = await start_incident(client, task_queue, *alerts)
        await wait_status(handle, "awaiting_approval")
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"  # one of two
        assert aws_world.writes() == []
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
        record: AuditRecord = await handle.result()
    assert record.outcome == "remediated", record.outcome_detail
    assert record.request.params == {"instance_ids": sorted([first, second])}
    assert record.observed.facts["without_tags"] == [stranger]
    assert sorted(aws_world.writes()) == ["CreateTags", "CreateTags", "RebootInstances", "RebootInstances"]
