"""Shadow entries under the generated policy: the reads their decision and diagnosis make
pass, every write is refused, and a shadow incident ends ``shadowed``.

A shadow entry is decided, never executed, but it reads the world first (``read_world``
for ``asg.scale`` and ``ec2.reboot``) and its diagnosis reads evidence. Under a policy
that left shadow entries out, ``read_world`` failed with AccessDenied and the incident
ended ``failed``. Here moto_server enforces IAM (actions only: the policy's action
projection, as in test_iam.py) for a worker user holding only the policy generated from
a whitelist whose four AWS entries are all in shadow mode.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.dev import aws_sim
from selfheal.activities.aws_evidence import AwsEvidence
from selfheal.contract import AwsEvidenceRequest
from selfheal.activities.aws_remediate import AwsRemediator
from selfheal.grants.iam import SHADOW_READS, policy_document
from selfheal.contract import ActionRequest, AuditRecord
from selfheal.whitelist import load_whitelist_bytes, target_of
from tests.grants.test_iam import Enforcing, _setup, moto_policy
from tests.workflows.helpers import alert, running_worker, settings_for, start_incident
from tests.workflows.test_incident_aws import LAMBDA_RULES, LAMBDA_WHITELIST

KINDS = ("ecs.rollback", "asg.scale", "ec2.reboot", "lambda.rollback")
WHITELIST = LAMBDA_WHITELIST
for _kind in KINDS:
    WHITELIST = WHITELIST.replace(f"    kind: {_kind}\n", f"    kind: {_kind}\n    mode: shadow\n")
# Every signature also cites its entry's AWS evidence (and the alarm's history, when the
# alert names an alarm): the diagnosis's reads go through the same policy.
RULES = LAMBDA_RULES
for _entry in ("rollback-checkout", "scale-queue-workers", "reboot-batch-hosts", "rollback-payments-webhook"):
    RULES = RULES.replace(f"    propose: {_entry}\n", f"    propose: {_entry}\n    aws_evidence: true\n")
ALARM = "queue-backlog"
WRITES = ("autoscaling:SetDesiredCapacity", "ec2:RebootInstances", "ec2:CreateTags", "ecs:UpdateService",
          "lambda:UpdateAlias")
DENIED = ("AccessDenied", "not authorized", "UnauthorizedOperation")


@pytest.fixture(scope="module")
def loaded():
    wl = load_whitelist_bytes(WHITELIST.encode(), "shadow.yaml")
    assert sorted(e.kind for e in wl.whitelist.entries if e.mode == "shadow") == sorted(KINDS)
    return wl


def _setup_with_bystander(url: str, policy: dict, sent: list[str]):
    """test_iam's world, user and key, plus a user with no policy at all: what the generator
    gave a whitelist whose AWS entries are all shadow, before shadow entries got their reads."""
    seeded, key, secret = _setup(url, policy, sent)
    iam = aws_sim.session(url)("iam")
    iam.meta.events.register("before-send", lambda **_: sent.append("iam"))
    iam.create_user(UserName="no-shadow-grants")
    bare = iam.create_access_key(UserName="no-shadow-grants")["AccessKey"]
    return seeded, key, secret, (bare["AccessKeyId"], bare["SecretAccessKey"])


@pytest.fixture(scope="module")
def enforcing(moto_server, loaded, tmp_path_factory):
    """A moto_server of its own whose first N requests skip auth, N being exactly the setup's."""
    shared, _ = moto_server
    policy = moto_policy(policy_document(loaded))
    shared.reset()
    counted: list[str] = []
    _setup_with_bystander(shared.url, policy, counted)  # a dry run, to count the setup's requests
    server = aws_sim.MotoServer(log_path=tmp_path_factory.mktemp("moto-iam-shadow") / "moto.log",
                                env={"INITIAL_NO_AUTH_ACTION_COUNT": str(len(counted))})
    with server:
        sent: list[str] = []
        seeded, key, secret, bare = _setup_with_bystander(server.url, policy, sent)
        assert len(sent) == len(counted)
        with pytest.raises(ClientError, match="InvalidClientTokenId"):  # the free requests are used up
            aws_sim.session(server.url)("ecs").list_clusters()
        worker = Enforcing(server, seeded, key, secret)
        worker.bare = Enforcing(server, seeded, *bare)
        yield worker


def granted_reads() -> set[str]:
    # sts:GetCallerIdentity (the account check) needs no grant, under moto as under AWS.
    return set().union(*SHADOW_READS.values()) | {"sts:GetCallerIdentity"}


def request(loaded, entry_id: str, **params) -> ActionRequest:
    return ActionRequest(entry_id=entry_id, target=target_of(loaded.whitelist.entry(entry_id)), params=params)


def window():
    until = datetime.now(UTC)
    return until - timedelta(hours=1), until


def denied(items) -> list:
    return [i for i in items if any(d in i.excerpt for d in DENIED)]


async def test_the_shadow_decisions_reads_pass_under_the_policy(enforcing, loaded):
    env = ActivityEnvironment()
    batch = enforcing.seeded["batch_instances"]
    enforcing.calls.clear()
    aws = AwsRemediator(enforcing.clients(), loaded)
    asg = await env.run(aws.read_world, request(loaded, "scale-queue-workers", desired_capacity=4))
    assert asg.facts["desired_capacity"] == 2, asg
    ec2 = await env.run(aws.read_world, request(loaded, "reboot-batch-hosts", instance_ids=batch[:1]))
    assert ec2.facts["eligible"] == batch[:1], ec2
    assert enforcing.calls == {"sts:GetCallerIdentity", "autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"}


async def test_the_shadow_diagnosis_evidence_passes_under_the_policy(enforcing, loaded):
    enforcing.calls.clear()
    evidence = AwsEvidence(enforcing.clients(), loaded)
    since, until = window()
    for entry in ("rollback-checkout", "scale-queue-workers", "reboot-batch-hosts", "rollback-payments-webhook"):
        items = await evidence.read(AwsEvidenceRequest(entry_id=entry, since=since, until=until, alarm_name=ALARM))
        assert denied(items) == [], (entry, items)
        # moto 5 has no DescribeAlarmHistory: past authorization it answers 500, recorded as unavailable.
        [alarm] = [i for i in items if i.source == f"alarm:{ALARM}"]
        assert alarm.id == f"unavailable:alarm:{ALARM}" and alarm.excerpt.startswith("unavailable (Aws.500)"), alarm
    # Together with read_world's, exactly the reads granted: none unused, none beyond them.
    assert enforcing.calls | {"autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"} == granted_reads()


async def test_without_the_shadow_grants_read_world_is_denied(enforcing, loaded):
    """The bug this fixes: with shadow entries left out of the policy, the read before
    deciding is refused, so the incident could only end ``failed``."""
    aws = AwsRemediator(enforcing.bare.clients(), loaded)
    with pytest.raises(ApplicationError, match="not authorized to perform: autoscaling:DescribeAutoScalingGroups"):
        await ActivityEnvironment().run(aws.read_world, request(loaded, "scale-queue-workers", desired_capacity=4))


def test_every_write_is_refused(enforcing):
    c, batch = enforcing.client, enforcing.seeded["batch_instances"]
    attempts = {
        "autoscaling:SetDesiredCapacity": lambda: c("autoscaling").set_desired_capacity(
            AutoScalingGroupName="demo-queue-workers", DesiredCapacity=4),
        "ec2:RebootInstances": lambda: c("ec2").reboot_instances(InstanceIds=batch[:1]),
        "ec2:CreateTags": lambda: c("ec2").create_tags(Resources=batch[:1], Tags=[{"Key": "selfheal:reboot", "Value": "x"}]),
        "ecs:UpdateService": lambda: c("ecs").update_service(cluster="demo", service="checkout", taskDefinition="checkout:6"),
        "lambda:UpdateAlias": lambda: c("lambda").update_alias(FunctionName="payments-webhook", Name="live",
                                                                FunctionVersion="2"),
    }
    assert set(attempts) == set(WRITES)
    for action, call in attempts.items():
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, (action, info.value)
        assert f"not authorized to perform: {action}" in str(info.value), (action, info.value)
    # Nothing changed, as the reads the policy allows show.
    group = c("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["demo-queue-workers"])
    assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 2
    tags = {t["Key"] for r in c("ec2").describe_instances(InstanceIds=batch[:1])["Reservations"]
            for i in r["Instances"] for t in i.get("Tags", [])}
    assert "selfheal:reboot" not in tags


async def test_shadow_incidents_end_shadowed_with_the_restricted_credentials(client, task_queue, tmp_path, enforcing):
    first = enforcing.seeded["batch_instances"][0]
    settings = settings_for(tmp_path, "unused.service", task_queue, None, whitelist=WHITELIST, rules=RULES)
    enforcing.calls.clear()
    async with running_worker(client, settings, aws=enforcing.clients()):
        asg = await start_incident(client, task_queue, alert("QueueBacklogHigh", alarmname=ALARM))
        ec2 = await start_incident(client, task_queue, alert("BatchAgentSilent", instance_id=first, alarmname=ALARM))
        ecs = await start_incident(client, task_queue, alert("CheckoutErrorRate", service="checkout"))
        fn = await start_incident(client, task_queue, alert("PaymentsWebhookErrors", region="eu-west-1"))
        handles = (asg, ec2, ecs, fn)
        records: list[AuditRecord] = [await h.result() for h in handles]
        histories = [await h.fetch_history() for h in handles]
    for record in records:
        assert record.outcome == "shadowed", (record.outcome, record.outcome_detail)
        assert "nothing was executed" in record.outcome_detail and record.remediation is None
        text = record.model_dump_json()
        assert not any(d in text for d in DENIED), text
    assert records[0].request.params == {"desired_capacity": 4, "current_capacity": 2}  # it read the group
    assert records[1].request.params == {"instance_ids": [first]}  # it read the instance's tags
    assert "by itself" not in records[1].outcome_detail and "would have run reboot-batch-hosts" in records[1].outcome_detail
    # The diagnoses read their evidence (moto has none to give but the alarm's 500) without a refusal.
    sources = {e.source for r in records for h in r.diagnosis.hypotheses for e in h.evidence}
    assert f"aws:alarm:{ALARM}" in sources, sources
    for history in histories[:2]:
        scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                     for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
        assert scheduled == ["load_policy", "diagnose", "read_world"]
    # Only the granted reads were made with the worker's credentials, and every one of them was.
    assert enforcing.calls == granted_reads(), enforcing.calls ^ granted_reads()
    assert not any(c.split(":")[1].startswith(("Set", "Reboot", "Create", "Update")) for c in enforcing.calls)
