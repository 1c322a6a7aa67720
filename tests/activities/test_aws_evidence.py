"""The read-only AWS evidence readers against moto_server (a local simulation): bounded in
window, count and bytes, names checked before any call, and nothing ever written.

Where moto 5.2 cannot produce what a reader parses (ECS service events, alarm history),
the parsing is tested with botocore's Stubber in addition, and the tests say so."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.aws_clients import AwsClients
from selfheal.activities.aws_evidence import AwsEvidence, alarm_history, asg_activities, ecs_service_events, log_events
from selfheal.contract import AwsEvidenceRequest, EvidenceItem
from selfheal.dev.aws_sim import DEMO_REGION
from selfheal.whitelist import load_whitelist

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy/demo/whitelist.yaml"
GROUP = "/aws/lambda/payments-webhook"


@pytest.fixture
def loaded():
    return load_whitelist(DEMO)


def now() -> datetime:
    return datetime.now(timezone.utc)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def line(i: int) -> str:
    if i % 10 == 0:
        return (f"[ERROR] 2026-11-26T10:{i % 60:02d}:00Z req-{i:04d} Traceback: stripe.error.APIConnectionError: "
                f"Could not connect to Stripe (api.stripe.com): timed out after 10s")
    return f"START RequestId: req-{i:04d} Version: 3" if i % 2 else f"[INFO] req-{i:04d} webhook accepted in {i % 97} ms"


def seed_logs(aws_world, times: list[datetime], group: str = GROUP, text=line) -> None:
    logs = aws_world.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="2026/11/26/[3]abc")
    events = [{"timestamp": ms(t), "message": text(i)} for i, t in enumerate(times)]
    logs.put_log_events(logGroupName=group, logStreamName="2026/11/26/[3]abc", logEvents=events)


def recorded_bodies(aws_world, operation: str) -> list[dict]:
    """The JSON bodies of the requests moto recorded for ``operation`` (the parameters sent)."""
    text = httpx.get(f"{aws_world.url}/moto-api/recorder/download-recording", timeout=10).text
    bodies = []
    for entry in map(json.loads, filter(str.strip, text.splitlines())):
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        if headers.get("x-amz-target", "").endswith(f".{operation}"):
            body = entry.get("body") or ""
            bodies.append(json.loads(base64.b64decode(body) if entry.get("body_encoded") else body))
    return bodies


def stubbed_clients() -> AwsClients:
    """Clients whose calls a botocore Stubber answers: for what moto cannot produce."""
    s = boto3.session.Session(aws_access_key_id="stub", aws_secret_access_key="stub")
    return AwsClients("http://127.0.0.1:9", session=s)  # nothing listens there: a call not stubbed fails


def writes(aws_world) -> list[str]:
    # tests/support/moto.py counts only Describe*/Get*/List* as reads; FilterLogEvents reads too.
    return [c for c in aws_world.writes() if c != "FilterLogEvents"]


def nbytes(items: list[EvidenceItem]) -> int:
    return sum(len(i.excerpt.encode()) for i in items)


# --- ECS -----------------------------------------------------------------------------

async def test_ecs_reader_returns_the_deployment_moto_keeps_and_no_events(aws_world, loaded):
    entry = loaded.whitelist.entry("rollback-checkout")
    aws_world.client("ecs").update_service(cluster="demo", service="checkout", taskDefinition="checkout:6")
    aws_world.start_recording()
    items = await ecs_service_events(aws_world.clients(), entry, now() - timedelta(hours=1), limit=5)
    # moto 5.2: no service events at all, and the service keeps its first deployment after an
    # update (still naming checkout:7, COMPLETED with MOTO_ECS_SERVICE_RUNNING tasks).
    assert [i.id.split(":")[0] for i in items] == ["ecs-deployment"]
    (deployment,) = items
    assert deployment.source == "ecs:demo/checkout" and deployment.timestamp is not None
    assert deployment.excerpt.startswith("PRIMARY checkout:7 rollout COMPLETED") and "running 2/2" in deployment.excerpt
    assert aws_world.calls() == ["DescribeServices"]


async def test_ecs_events_are_newest_first_newer_than_since_and_cut_to_the_limit():
    # Stubbed, not moto: moto records no ECS service events.
    clients = stubbed_clients()
    entry = load_whitelist(DEMO).whitelist.entry("rollback-checkout")
    t = now()
    events = [{"id": f"e{i}", "createdAt": t - timedelta(minutes=i), "message": f"(service checkout) event {i}" + "x" * 2000}
              for i in range(100)]
    service = {"serviceName": "checkout", "events": events, "deployments": [
        {"id": "ecs-svc/1", "status": "PRIMARY", "taskDefinition": "arn:aws:ecs:eu-west-1:123456789012:task-definition/checkout:7",
         "rolloutState": "FAILED", "rolloutStateReason": "tasks failed to start", "runningCount": 0, "desiredCount": 2,
         "createdAt": t}]}
    with Stubber(clients.client("ecs", DEMO_REGION)) as stub:
        stub.add_response("describe_services", {"services": [service]})
        items = await ecs_service_events(clients, entry, t - timedelta(minutes=30, seconds=30), limit=5)
        stub.add_response("describe_services", {"services": [service]})
        capped = await ecs_service_events(clients, entry, t - timedelta(days=7), limit=10_000)
    assert [i.id for i in items] == ["ecs-event:e0", "ecs-event:e1", "ecs-event:e2", "ecs-event:e3", "ecs-event:e4",
                                     "ecs-deployment:ecs-svc/1"]
    assert items[4].truncated and not items[0].truncated and all(len(i.excerpt) <= 1000 for i in items)
    assert "PRIMARY checkout:7 rollout FAILED (tasks failed to start); running 0/2" in items[5].excerpt
    assert len(capped) == 100 + 1 and "limit 100" in capped[0].query  # 10,000 is cut to 100


# --- CloudWatch Logs -------------------------------------------------------------------

async def test_log_events_are_bounded_by_limit_bytes_and_window(aws_world):
    t = now().replace(microsecond=0)
    seed_logs(aws_world, [t - timedelta(seconds=500 - i) for i in range(500)])
    clients = aws_world.clients()
    since, until = t - timedelta(seconds=300), t - timedelta(seconds=100)

    by_count = await log_events(clients, DEMO_REGION, GROUP, since, until, limit=50)
    assert len(by_count) == 50 and by_count[-1].truncated and not any(i.truncated for i in by_count[:-1])
    assert all(since <= i.timestamp <= until for i in by_count)
    assert by_count[0].timestamp == since and by_count[0].source == f"logs:{GROUP}"  # oldest first, as AWS returns them
    assert len({i.id for i in by_count}) == 50

    by_bytes = await log_events(clients, DEMO_REGION, GROUP, since, until, max_bytes=1000, limit=200)
    assert nbytes(by_bytes) == 1000 and len(by_bytes) < 200 and by_bytes[-1].truncated

    everything = await log_events(clients, DEMO_REGION, GROUP, since, until, max_bytes=60_000, limit=200)
    assert len(everything) == 200 and all(since <= i.timestamp <= until for i in everything)
    # The window holds 201 events (both ends included), so the 200th is marked.
    assert everything[-1].truncated
    whole = await log_events(clients, DEMO_REGION, GROUP, t - timedelta(seconds=150), until, max_bytes=60_000)
    assert len(whole) == 51 and not any(i.truncated for i in whole)


async def test_log_events_filter_pattern(aws_world):
    t = now().replace(microsecond=0)
    seed_logs(aws_world, [t - timedelta(seconds=500 - i) for i in range(500)])
    items = await log_events(aws_world.clients(), DEMO_REGION, GROUP, t - timedelta(hours=1), t, limit=200,
                             max_bytes=60_000, filter_pattern="ERROR")
    # moto supports simple term patterns: only the [ERROR] lines (every tenth) come back.
    assert len(items) == 50 and all("[ERROR]" in i.excerpt for i in items) and not items[-1].truncated
    assert "pattern 'ERROR'" in items[0].query


async def test_log_events_follow_next_token_asking_only_for_what_is_left():
    # Stubbed, not moto: moto answers `limit` events in one page, so it never makes the
    # reader page; real AWS stops pages at 1 MB or a search chunk, even empty ones.
    clients, t = stubbed_clients(), now().replace(microsecond=0)
    since = t - timedelta(hours=1)
    event = lambda i: {"logStreamName": "s", "eventId": str(i), "timestamp": ms(t) - 1000 * (10 - i), "message": f"line {i}\n"}
    base = {"logGroupName": GROUP, "startTime": ms(since), "endTime": ms(t)}
    with Stubber(clients.client("logs", DEMO_REGION)) as stub:
        stub.add_response("filter_log_events", {"events": [event(0), event(1)], "nextToken": "p2"}, {**base, "limit": 5})
        stub.add_response("filter_log_events", {"events": [], "nextToken": "p3"}, {**base, "limit": 3, "nextToken": "p2"})
        stub.add_response("filter_log_events", {"events": [event(2), event(3), event(4)], "nextToken": "p4"},
                          {**base, "limit": 3, "nextToken": "p3"})
        items = await log_events(clients, DEMO_REGION, GROUP, since, t, limit=5)
        stub.assert_no_pending_responses()
    assert [i.excerpt for i in items] == [f"line {i}" for i in range(5)] and items[-1].truncated


async def test_caps_cut_a_week_to_24h_and_limits_and_bytes_to_their_maxima(aws_world):
    t = now().replace(microsecond=0)
    old = [t - timedelta(days=2, seconds=i) for i in range(20, 0, -1)]
    recent = [t - timedelta(seconds=500 - i) for i in range(500)]
    seed_logs(aws_world, old + recent, text=lambda i: f"[ERROR] req-{i:04d} " + "y" * 400)
    aws_world.start_recording()
    items = await log_events(aws_world.clients(), DEMO_REGION, GROUP, t - timedelta(days=7), t,
                             max_bytes=10**9, limit=10_000)
    (sent,) = recorded_bodies(aws_world, "FilterLogEvents")
    assert sent["endTime"] - sent["startTime"] == 24 * 3600 * 1000 and sent["endTime"] == ms(t)
    assert sent["limit"] == 200  # 10,000 asked, 200 at most
    assert all(i.timestamp >= t - timedelta(hours=24) for i in items)  # nothing from two days ago
    assert nbytes(items) <= 64 * 1024 and len(items) < 200 and items[-1].truncated  # 64 KiB reached first
    assert "limit 200 max_bytes 65536" in items[0].query


async def test_invalid_names_and_windows_are_refused_before_any_call(aws_world):
    clients, t = aws_world.clients(), now()
    for bad in ("/aws/lambda/x; rm -rf", "", "a" * 513, "/aws/lambda/ünïcode"):
        with pytest.raises(ApplicationError) as info:
            await log_events(clients, DEMO_REGION, bad, t - timedelta(hours=1), t)
        assert info.value.type == "InvalidEvidenceRequest" and info.value.non_retryable
    for call in (alarm_history(clients, DEMO_REGION, "a" * 256, t - timedelta(hours=1), t),
                 alarm_history(clients, DEMO_REGION, "", t - timedelta(hours=1), t),
                 log_events(clients, DEMO_REGION, GROUP, t, t - timedelta(hours=1))):
        with pytest.raises(ApplicationError, match="alarm name|window starts"):
            await call
    assert aws_world.calls() == []


# --- Auto Scaling and CloudWatch alarms --------------------------------------------------

async def test_asg_reader_returns_what_moto_records_nothing(aws_world, loaded):
    entry = loaded.whitelist.entry("scale-queue-workers")
    aws_world.client("autoscaling").set_desired_capacity(AutoScalingGroupName="demo-queue-workers", DesiredCapacity=4)
    aws_world.start_recording()
    # moto 5.2 records no scaling activities: DescribeScalingActivities answers an empty
    # list, even after set_desired_capacity. The reader returns that, without error.
    assert await asg_activities(aws_world.clients(), entry, now() - timedelta(days=3), limit=500) == []
    assert aws_world.calls() == ["DescribeScalingActivities"]


async def test_alarm_history_is_not_implemented_by_moto(aws_world):
    cw = aws_world.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="CheckoutErrorRate", MetricName="5xx", Namespace="Demo", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="CheckoutErrorRate", StateValue="ALARM", StateReason="5xx above 5 for 1 minute")
    # moto 5.2.5 has no DescribeAlarmHistory at all: it answers HTTP 500 (not an empty
    # list), which the reader surfaces as a retryable Aws.500; the activity records it as
    # an "unavailable:" item (test_the_activity_...). The parsing is tested stubbed below.
    with pytest.raises(ApplicationError) as info:
        await alarm_history(aws_world.clients(), DEMO_REGION, "CheckoutErrorRate", now() - timedelta(hours=1), now())
    assert info.value.type == "Aws.500"


async def test_alarm_history_parsing_stubbed():
    clients = stubbed_clients()
    t = now().replace(microsecond=0)
    data = json.dumps({"oldState": {"stateValue": "OK"}, "newState": {"stateValue": "ALARM", "stateReason": "5xx above 5"}})
    history = {"AlarmHistoryItems": [
        {"AlarmName": "CheckoutErrorRate", "Timestamp": t, "HistoryItemType": "StateUpdate",
         "HistorySummary": "Alarm updated from OK to ALARM", "HistoryData": data},
        {"AlarmName": "CheckoutErrorRate", "Timestamp": t - timedelta(minutes=5), "HistoryItemType": "ConfigurationUpdate",
         "HistorySummary": "Alarm created", "HistoryData": "not json"}], "NextToken": "more"}
    with Stubber(clients.client("cloudwatch", DEMO_REGION)) as stub:
        stub.add_response("describe_alarm_history", history, {
            "AlarmName": "CheckoutErrorRate", "StartDate": t - timedelta(hours=24), "EndDate": t, "MaxRecords": 100})
        items = await alarm_history(clients, DEMO_REGION, "CheckoutErrorRate", t - timedelta(days=7), t, limit=10_000)
    assert items[0].excerpt == "StateUpdate: Alarm updated from OK to ALARM; new state ALARM: 5xx above 5"
    assert items[1].excerpt == "ConfigurationUpdate: Alarm created" and items[1].truncated
    assert items[0].to_evidence().source == "alarm:CheckoutErrorRate"


# --- the activity ------------------------------------------------------------------------

async def test_the_activity_reads_by_kind_refuses_other_entries_and_writes_nothing(aws_world, loaded):
    t = now().replace(microsecond=0)
    seed_logs(aws_world, [t - timedelta(seconds=300 - i) for i in range(300)])
    aws_world.client("ecs").update_service(cluster="demo", service="checkout", taskDefinition="checkout:6")
    aws_world.start_recording()
    evidence = AwsEvidence(aws_world.clients(), loaded)
    run = ActivityEnvironment().run
    window = {"since": t - timedelta(hours=1), "until": t}

    ecs = await run(evidence.read_aws_evidence, AwsEvidenceRequest(entry_id="rollback-checkout", **window,
                                                                   alarm_name="CheckoutErrorRate"))
    assert [i.id.split(":")[0] for i in ecs] == ["ecs-deployment", "unavailable"]
    assert ecs[1].source == "alarm:CheckoutErrorRate" and ecs[1].excerpt.startswith("unavailable (Aws.500)")

    lam = await run(evidence.read_aws_evidence, AwsEvidenceRequest(entry_id="rollback-payments-webhook", **window))
    assert len(lam) == 200 and {i.source for i in lam} == {f"logs:{GROUP}"} and nbytes(lam) <= 16_384
    assert lam[-1].truncated

    ec2 = await run(evidence.read_aws_evidence, AwsEvidenceRequest(entry_id="reboot-batch-hosts", **window))
    assert ec2 == []

    for entry_id in ("rollback-everything", "restart-demo-api"):
        with pytest.raises(ApplicationError) as info:
            await run(evidence.read_aws_evidence, AwsEvidenceRequest(entry_id=entry_id, **window))
        assert info.value.type == "OutOfPolicy" and info.value.non_retryable

    assert writes(aws_world) == [], aws_world.calls()  # read-only proof
    assert set(aws_world.calls()) == {"GetCallerIdentity", "DescribeServices", "DescribeAlarmHistory", "FilterLogEvents"}


async def test_a_function_without_a_log_group_yields_an_unavailable_item(aws_world, loaded):
    evidence = AwsEvidence(aws_world.clients(), loaded)
    items = await ActivityEnvironment().run(evidence.read_aws_evidence, AwsEvidenceRequest(
        entry_id="rollback-payments-webhook", since=now() - timedelta(hours=1), until=now()))
    assert [i.id for i in items] == [f"unavailable:logs:{GROUP}"] and "ResourceNotFoundException" in items[0].excerpt
    assert writes(aws_world) == []
