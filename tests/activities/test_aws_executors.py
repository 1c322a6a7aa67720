"""The AWS executors against moto_server (a local simulation): within bounds, refusing
without calling AWS, no-ops when the world is right, and one effect for one key."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.aws_remediate import AwsRemediator
from selfheal.activities.verify import Verifier
from selfheal.contract import ActionRequest, RemediationInput, VerifyInput
from selfheal.dev.aws_sim import DEMO_IMAGE
from selfheal.whitelist import load_whitelist, load_whitelist_bytes, target_of

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy/demo/whitelist.yaml"


def request(loaded, entry_id: str, **params) -> ActionRequest:
    return ActionRequest(entry_id=entry_id, target=target_of(loaded.whitelist.entry(entry_id)), params=params)


def inp(loaded, req: ActionRequest, key: str = "incident-1/act", baseline=None) -> RemediationInput:
    return RemediationInput(incident_id="incident-1", idempotency_key=key, whitelist_sha256=loaded.sha256,
                            request=req, baseline=baseline)


async def run(activity, arg):
    return await ActivityEnvironment().run(activity, arg)


@pytest.fixture
def loaded():
    return load_whitelist(DEMO)


@pytest.fixture
def aws(aws_world, loaded):
    return AwsRemediator(aws_world.clients(), loaded)


async def refused(activity, arg, error_type: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run(activity, arg)
    assert info.value.type == error_type, info.value
    assert info.value.non_retryable
    return info.value


def service_td(aws_world) -> str:
    return aws_world.client("ecs").describe_services(cluster="demo", services=["checkout"])["services"][0]["taskDefinition"]


# --- ecs.rollback -----------------------------------------------------------------

async def test_ecs_rollback_points_the_service_at_the_pinned_revision_once(aws, aws_world, loaded):
    req = request(loaded, "rollback-checkout")
    baseline = await run(aws.read_world, req)
    assert baseline.facts["task_definition"] == "checkout:7"
    first = await run(aws.rollback_ecs_service, inp(loaded, req, baseline=baseline))
    assert first.action == "executed" and first.before.facts["task_definition"] == "checkout:7"
    assert first.after.facts["task_definition"] == "checkout:6"
    assert service_td(aws_world).endswith("checkout:6")
    # The same step again (a retry, a replay after a crash): the world is right, nothing is sent.
    again = await run(aws.rollback_ecs_service, inp(loaded, req, baseline=baseline))
    assert again.action == "already_done", again.detail
    assert aws_world.writes().count("UpdateService") == 1, aws_world.calls()


async def test_ecs_rollback_is_a_no_op_when_already_on_the_pinned_revision(aws, aws_world, loaded):
    aws_world.client("ecs").update_service(cluster="demo", service="checkout", taskDefinition="checkout:6")
    aws_world.start_recording()
    req = request(loaded, "rollback-checkout")
    baseline = await run(aws.read_world, req)
    result = await run(aws.rollback_ecs_service, inp(loaded, req, baseline=baseline))
    assert result.action == "no_op", result.detail
    assert "UpdateService" not in aws_world.calls()


async def test_ecs_wrong_target_is_refused_without_calling_aws(aws, aws_world, loaded):
    good = request(loaded, "rollback-checkout")
    for target in ({**good.target, "task_definition": "checkout:7"}, {**good.target, "cluster": "prod"},
                   {**good.target, "region": "us-east-1"}, {**good.target, "account": "999999999999"}):
        bad = good.model_copy(update={"target": target})
        await refused(aws.rollback_ecs_service, inp(loaded, bad), "OutOfPolicy")
    # Another kind's executor for this entry, and an entry id not in the whitelist.
    await refused(aws.scale_asg, inp(loaded, good), "OutOfPolicy")
    await refused(aws.rollback_ecs_service, inp(loaded, good.model_copy(update={"entry_id": "rollback-everything"})), "OutOfPolicy")
    assert aws_world.calls() == []
    assert service_td(aws_world).endswith("checkout:7")


async def test_credentials_for_another_account_act_nowhere(aws_world):
    text = DEMO.read_text().replace('account: "123456789012"    # can act', 'account: "210987654321"    # can act')
    other = load_whitelist_bytes(text.encode(), "other-account.yaml")
    aws = AwsRemediator(aws_world.clients(), other)
    error = await refused(aws.rollback_ecs_service, inp(other, request(other, "rollback-checkout")), "WrongAccount")
    assert "123456789012" in str(error) and "210987654321" in str(error)
    assert aws_world.writes() == []


async def test_ecs_verification_reads_the_service_and_its_primary_deployment(aws, aws_world, loaded):
    verifier = Verifier(None, None, loaded, aws_world.clients())
    req = request(loaded, "rollback-checkout")
    before = await run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=0.1))
    assert not before.ok and "checkout:7" in before.checks[0].detail
    await run(aws.rollback_ecs_service, inp(loaded, req, baseline=await run(aws.read_world, req)))
    after = await run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=5))
    assert after.ok, after.checks
    assert "COMPLETED" in after.checks[0].detail


# --- asg.scale ----------------------------------------------------------------------

def desired(aws_world) -> int:
    groups = aws_world.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-queue-workers"])
    return groups["AutoScalingGroups"][0]["DesiredCapacity"]


async def test_asg_scale_within_bounds_once(aws, aws_world, loaded):
    req = request(loaded, "scale-queue-workers", desired_capacity=4, current_capacity=2)
    baseline = await run(aws.read_world, req)
    assert baseline.facts["desired_capacity"] == 2
    first = await run(aws.scale_asg, inp(loaded, req, baseline=baseline))
    assert first.action == "executed" and desired(aws_world) == 4
    again = await run(aws.scale_asg, inp(loaded, req, baseline=baseline))
    assert again.action == "already_done"
    assert aws_world.writes().count("SetDesiredCapacity") == 1
    verifier = Verifier(None, None, loaded, aws_world.clients())
    verified = await run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=5))
    assert verified.ok, verified.checks


@pytest.mark.parametrize("wanted, current, rule", [
    (9, 8, "bounds.max_capacity"), (500, 2, "bounds.max_capacity"), (1, 2, "bounds.min_capacity"),
    (5, 2, "bounds.max_step"), (["4"], 2, "params"),
])
async def test_asg_out_of_bounds_is_denied_not_clamped_and_calls_nothing(aws, aws_world, loaded, wanted, current, rule):
    req = request(loaded, "scale-queue-workers", desired_capacity=wanted, current_capacity=current)
    error = await refused(aws.scale_asg, inp(loaded, req), "OutOfPolicy")
    assert f"[{rule}]" in str(error)
    assert aws_world.calls() == [] and desired(aws_world) == 2


async def test_asg_capacity_that_moved_since_the_decision_changes_nothing(aws, aws_world, loaded):
    req = request(loaded, "scale-queue-workers", desired_capacity=4, current_capacity=2)
    baseline = await run(aws.read_world, req)
    aws_world.client("autoscaling").set_desired_capacity(AutoScalingGroupName="demo-queue-workers", DesiredCapacity=3)
    aws_world.start_recording()
    result = await run(aws.scale_asg, inp(loaded, req, baseline=baseline))
    assert result.action == "world_changed" and "people decide" in result.detail
    assert aws_world.writes() == [] and desired(aws_world) == 3


# --- ec2.reboot ---------------------------------------------------------------------

async def test_ec2_reboot_tags_then_reboots_each_instance_once_per_step(aws, aws_world, loaded):
    batch = aws_world.seeded["batch_instances"][:2]
    req = request(loaded, "reboot-batch-hosts", instance_ids=batch)
    baseline = await run(aws.read_world, req)
    assert baseline.facts["eligible"] == batch
    first = await run(aws.reboot_instances, inp(loaded, req, baseline=baseline))
    assert first.action == "executed"
    assert aws_world.writes().count("RebootInstances") == 2
    again = await run(aws.reboot_instances, inp(loaded, req, baseline=baseline))
    assert again.action == "already_done"
    assert aws_world.writes().count("RebootInstances") == 2  # not one more
    # A later incident step is a new key: it may reboot them again.
    await run(aws.reboot_instances, inp(loaded, req, key="incident-2/act", baseline=baseline))
    assert aws_world.writes().count("RebootInstances") == 4
    verifier = Verifier(None, None, loaded, aws_world.clients())
    verified = await run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=5))
    assert verified.ok and "instance=ok system=ok" in verified.checks[0].detail


async def test_ec2_an_instance_that_was_tagged_before_a_crash_is_skipped(aws, aws_world, loaded):
    """The SIGKILL between tag and reboot: the retry finds the tag and never reboots it twice."""
    from selfheal.activities.aws_ec2 import REBOOT_TAG, step_tag

    first, second = aws_world.seeded["batch_instances"][:2]
    aws_world.client("ec2").create_tags(Resources=[first], Tags=[{"Key": REBOOT_TAG, "Value": step_tag("incident-1/act")}])
    aws_world.start_recording()
    req = request(loaded, "reboot-batch-hosts", instance_ids=[first, second])
    result = await run(aws.reboot_instances, inp(loaded, req))
    assert result.action == "executed" and f"rebooted {second}" in result.detail and first in result.detail
    reboots = [c for c in aws_world.writes() if c == "RebootInstances"]
    assert reboots == ["RebootInstances"]


async def test_ec2_refuses_untagged_or_too_many_instances_without_rebooting(aws, aws_world, loaded):
    ec2 = aws_world.client("ec2")
    stranger = ec2.run_instances(ImageId=DEMO_IMAGE, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "batch"}]}])["Instances"][0]["InstanceId"]
    aws_world.start_recording()
    batch = aws_world.seeded["batch_instances"]
    # Only Role=batch, not Env=demo: the executor re-reads tags and refuses the whole request.
    await refused(aws.reboot_instances, inp(loaded, request(loaded, "reboot-batch-hosts", instance_ids=[batch[0], stranger])),
                  "OutOfPolicy")
    # Three instances: above max_instances, refused before any AWS call.
    error = await refused(aws.reboot_instances, inp(loaded, request(loaded, "reboot-batch-hosts", instance_ids=batch)), "OutOfPolicy")
    assert "max_instances" in str(error)
    assert aws_world.writes() == []
    world = await run(aws.read_world, request(loaded, "reboot-batch-hosts", instance_ids=[batch[0], stranger, "i-0123456789abcdef0"]))
    assert world.facts["eligible"] == [batch[0]]
    assert world.facts["without_tags"] == [stranger] and world.facts["not_found"] == ["i-0123456789abcdef0"]


# --- lambda.rollback ------------------------------------------------------------------

async def test_lambda_rollback_points_the_alias_at_the_pinned_version_once(aws, aws_world, loaded):
    req = request(loaded, "rollback-payments-webhook")
    baseline = await run(aws.read_world, req)
    assert baseline.facts["version"] == "3"
    first = await run(aws.rollback_lambda_alias, inp(loaded, req, baseline=baseline))
    assert first.action == "executed" and first.after.facts["version"] == "2"
    again = await run(aws.rollback_lambda_alias, inp(loaded, req, baseline=baseline))
    assert again.action == "already_done"
    assert aws_world.writes().count("UpdateAlias") == 1
    noop = await run(aws.rollback_lambda_alias, inp(loaded, req, baseline=await run(aws.read_world, req)))
    assert noop.action == "no_op"
    verifier = Verifier(None, None, loaded, aws_world.clients())
    assert (await run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=5))).ok
