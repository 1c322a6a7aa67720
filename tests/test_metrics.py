"""Prometheus metrics: the SDK bridge, the governor's gauges, and the ingress's counters.

The bridge is fed by a real Temporal runtime (its meter records into the real buffer), the
ingress runs against a real Temporal dev server, and every exposition is read back with
prometheus-client's own parser. Prometheus itself scrapes both processes in
``tests/workflows/test_metrics_prometheus.py``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from selfheal import worker as worker_module
from selfheal.activities.diagnose import load_rules
from selfheal.activities.runner import LocalRunner
from selfheal.ingress.app import create_app
from selfheal.ingress import delivery as delivery_module
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from selfheal.ingress.metrics import ANSWERS
from selfheal.metrics import GovernorCollector, SdkMetrics, parse_address, serve
from selfheal.contract import Rejection
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.whitelist.vocabulary import Hold
from selfheal.contract.governor import EntryStatus, GovernorStatus
from selfheal.workflows.incident import IncidentWorkflow
from tests.conftest import temporal_binary
from tests.ingress.conftest import SECRET, TOKEN, settings
from tests.ingress.payloads import alertmanager, body, generic, prom_alert, sign
from tests.ingress.served import free_port
from tests.support.devserver import DevServer
from tests.workflows.helpers import FAST, alert, offline_aws, start_incident, wait_for, wait_status, whitelist_yaml

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def samples(text: str | bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by (sample name, its labels)."""
    text = text.decode() if isinstance(text, bytes) else text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    """The sample whose labels include ``labels`` (exactly one must), or None."""
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) <= 1, f"{name}{labels} matches {len(matches)} series"
    return matches[0] if matches else None


# --- the SDK bridge ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bridge() -> SdkMetrics:
    return SdkMetrics()  # one runtime (and its threads) for the module's tests


def test_counter_deltas_add_up_per_attribute_set_and_the_name_ends_in_total(bridge):
    meter = bridge.runtime.metric_meter.with_additional_attributes({"task_queue": "q1"})
    counter = meter.create_counter("selfheal_test_incidents", "incidents by outcome")
    counter.add(2, {"outcome": "remediated", "entry": "restart-api"})
    counter.add(1, {"outcome": "remediated", "entry": "restart-api"})
    counter.add(1, {"outcome": "expired", "entry": "restart-api"})
    assert bridge.drain() == 3
    found = samples(generate_latest(bridge.registry))
    assert value(found, "selfheal_test_incidents_total", outcome="remediated", entry="restart-api", task_queue="q1") == 3
    assert value(found, "selfheal_test_incidents_total", outcome="expired") == 1
    assert "# TYPE selfheal_test_incidents_total counter" in generate_latest(bridge.registry).decode()


def test_histograms_in_seconds_use_their_metrics_buckets_and_end_in_seconds(bridge):
    meter = bridge.runtime.metric_meter
    meter.create_histogram_float("selfheal_decision_seconds", "start to decision", "s").record(45.0, {"decision": "auto"})
    meter.create_histogram_float("selfheal_approval_seconds", "request to approval", "s").record(5400.0, {"tier": "service"})
    meter.create_histogram_timedelta("selfheal_test_latency", "a duration", "s").record(timedelta(milliseconds=30))
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    decision = {le: value(found, "selfheal_decision_seconds_bucket", decision="auto", le=le) for le in ("30.0", "60.0", "+Inf")}
    assert decision == {"30.0": 0, "60.0": 1, "+Inf": 1}
    assert value(found, "selfheal_decision_seconds_sum", decision="auto") == 45.0
    assert value(found, "selfheal_decision_seconds_count", decision="auto") == 1
    # Approvals span minutes to a day: 90 minutes lands between 1 h and 2 h.
    assert value(found, "selfheal_approval_seconds_bucket", tier="service", le="3600.0") == 0
    assert value(found, "selfheal_approval_seconds_bucket", tier="service", le="7200.0") == 1
    assert value(found, "selfheal_approval_seconds_bucket", tier="service", le="86400.0") == 1
    # A duration named without its unit gets "_seconds", as the SDK's own exporter names them.
    assert value(found, "selfheal_test_latency_seconds_sum") == pytest.approx(0.03)
    assert value(found, "selfheal_test_latency_seconds_bucket", le="0.05") == 1
    assert not any(name.endswith("_seconds_seconds_bucket") for name, _ in found)


def test_gauges_keep_the_last_value_and_attribute_values_become_strings(bridge):
    gauge = bridge.runtime.metric_meter.create_gauge("selfheal_test_slots", "slots")
    gauge.set(5, {"eager": True, "worker_type": "ActivityWorker"})
    gauge.set(7, {"eager": True, "worker_type": "ActivityWorker"})
    gauge.set(1, {"eager": False, "worker_type": "WorkflowWorker"})
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    assert value(found, "selfheal_test_slots", worker_type="ActivityWorker", eager="true") == 7
    assert value(found, "selfheal_test_slots", worker_type="WorkflowWorker", eager="false") == 1


def test_label_pairs_remembered_per_attribute_set_stay_right_past_the_cache_bound(bridge, monkeypatch):
    # Labels are worked out once per attribute set the SDK hands out; the cache is bounded
    # and a set seen again after it was cleared still lands in its own series.
    monkeypatch.setattr("selfheal.metrics.LABEL_CACHE", 3)
    counter = bridge.runtime.metric_meter.create_counter("selfheal_test_cached", "cached")
    for round_ in range(3):
        for i in range(5):
            counter.add(i + 1, {"entry": f"e{i}", "flag": bool(i % 2)})
        assert bridge.drain() == 5
    assert len(bridge._label_cache) <= 3
    found = samples(generate_latest(bridge.registry))
    for i in range(5):
        assert value(found, "selfheal_test_cached_total", entry=f"e{i}", flag=str(bool(i % 2)).lower()) == 3 * (i + 1)


def test_one_metric_may_carry_different_attribute_sets(bridge):
    # The SDK does this itself: temporal_request has task_queue on some operations only.
    counter = bridge.runtime.metric_meter.create_counter("selfheal_test_requests", "requests")
    counter.add(1, {"operation": "GetSystemInfo"})
    counter.add(4, {"operation": "PollWorkflowTaskQueue", "task_queue": "q"})
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    assert value(found, "selfheal_test_requests_total", operation="GetSystemInfo") == 1
    assert value(found, "selfheal_test_requests_total", operation="PollWorkflowTaskQueue", task_queue="q") == 4


async def test_an_incident_rebuilt_from_history_at_every_step_is_counted_once_however_often_it_is_read(
        bridge, temporal_env, tmp_path):
    """With no workflow cache, every workflow task replays the incident from its first event,
    and so does every query: a query that reaches an incident whose newest events no task has
    handled yet runs them, outside any task and not as a replay (the SDK cannot tell), before
    the task that handles them runs them again. The decision, the approval and the outcome
    are each counted once all the same (``workflows/metrics.py``)."""
    task_queue = f"metrics-{uuid.uuid4().hex[:8]}"
    (tmp_path / "wl.yaml").write_text(whitelist_yaml("metrics.service"))
    # A rule that reads nothing: the incident needs no host, only a person to answer.
    (tmp_path / "rules.yaml").write_text("""signatures:
  - id: checkout
    summary: checkout errors after a deploy
    match: ['alertname="CheckoutErrorRate"']
    propose: rollback-checkout
""")
    settings_ = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                               diagnosis=str(tmp_path / "rules.yaml"), incident=FAST)
    client = await Client.connect(temporal_env.client.service_client.config.target_host,
                                  data_converter=pydantic_data_converter, runtime=bridge.runtime)
    loaded = load_whitelist(settings_.whitelist)
    incidents = 6

    async def status(handle) -> str | None:
        """The incident's status, or None when the query went unanswered."""
        try:
            return await handle.query(IncidentWorkflow.status, rpc_timeout=timedelta(seconds=3))
        except RPCError as exc:
            # With no cache, a query that came in while the incident's task ran now and then
            # goes unanswered (the SDK's, not selfheal's; the class of temporalio/sdk-rust#716,
            # a legacy query overwritten by a task for the same run): ask again.
            if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED) \
                    and "query timed out" not in exc.message:
                raise
            return None

    async def awaiting(handle) -> bool:
        return await status(handle) == "awaiting_approval"

    async def read_until_done(handle) -> None:  # only adds pressure
        while await status(handle) != "done":
            pass

    async def one(n: int):
        handle = await start_incident(client, task_queue, alert("CheckoutErrorRate", service=f"checkout-{n}"))
        reader = asyncio.create_task(read_until_done(handle))
        await wait_for(lambda: awaiting(handle), timeout=60)
        # The same query can show "awaiting_approval" before the task that gets there runs
        # (docs/reference/metrics.md): the answer is then held until the incident asks.
        await handle.execute_update(IncidentWorkflow.reject, Rejection(approver="alice", reason="not now"))
        record = await handle.result()
        await reader
        return record

    async with httpx.AsyncClient() as http:
        activities = worker_module.build_activities(settings_, loaded, load_rules(settings_.diagnosis), client,
                                                    LocalRunner(), http, False, offline_aws())
        async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS, activities=activities,
                          workflow_runner=worker_module.WORKFLOW_RUNNER, max_cached_workflows=0), \
                worker_module.governor_worker(client, task_queue):
            records = await asyncio.gather(*(one(n) for n in range(incidents)))
    assert [r.outcome for r in records] == ["rejected"] * incidents, [r.outcome_detail for r in records]
    assert len({r.incident_id for r in records}) == incidents
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    replays = sum(v for (n, ls), v in found.items()
                  if n == "temporal_workflow_task_replay_latency_seconds_count" and ("task_queue", task_queue) in ls)
    assert replays >= 2 * incidents  # each incident was rebuilt from history, more than once
    assert value(found, "selfheal_decision_seconds_count", task_queue=task_queue, decision="needs_approval") == incidents
    assert value(found, "selfheal_incidents_total", task_queue=task_queue, outcome="rejected",
                 entry="rollback-checkout") == incidents


async def test_a_drill_counts_as_a_drill_per_person_and_never_as_an_incident_or_an_approval(bridge, temporal_env,
                                                                                           tmp_path, aws_world):
    from selfheal.contract import Approval, AuditRecord
    from selfheal.workflows.drill import DrillWorkflow
    from tests.workflows.test_drills import DRILLED, RULES
    from tests.workflows.helpers import drill_of

    task_queue = f"metrics-{uuid.uuid4().hex[:8]}"
    (tmp_path / "wl.yaml").write_text(DRILLED)
    (tmp_path / "rules.yaml").write_text(RULES)
    settings_ = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                               diagnosis=str(tmp_path / "rules.yaml"), incident=FAST)
    client = await Client.connect(temporal_env.client.service_client.config.target_host,
                                  data_converter=pydantic_data_converter, runtime=bridge.runtime)
    loaded = load_whitelist(settings_.whitelist)
    async with httpx.AsyncClient() as http:
        activities = worker_module.build_activities(settings_, loaded, load_rules(settings_.diagnosis), client,
                                                    LocalRunner(), http, False, aws_world.clients())
        async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS, activities=activities,
                          workflow_runner=worker_module.WORKFLOW_RUNNER), worker_module.governor_worker(client, task_queue):
            incident = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            drill = client.get_workflow_handle(await drill_of(incident), result_type=AuditRecord)
            await wait_status(drill, "awaiting_approval", timeout=60)
            await drill.execute_update(DrillWorkflow.approve, Approval(approver="alice"))  # missed
            drilled = await drill.result()
            await incident.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
            await incident.result()
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    entry = drilled.drill.proposal
    asked = set(drilled.decision.approvers)
    assert value(found, "selfheal_drills_total", task_queue=task_queue, entry=entry, verdict="missed") == 1
    assert value(found, "selfheal_drill_verdicts_total", task_queue=task_queue, entry=entry, person="alice",
                 verdict="missed") == 1
    for person in asked - {"alice"}:  # asked, never answered
        assert value(found, "selfheal_drill_verdicts_total", task_queue=task_queue, entry=entry, person=person,
                     verdict="unanswered") == 1
    # The incident counts; the drill does not, nor does its approval.
    incidents = {dict(ls).get("entry") for (n, ls), v in found.items()
                 if n == "selfheal_incidents_total" and ("task_queue", task_queue) in ls and v}
    assert incidents == {"rollback-checkout"}
    assert value(found, "selfheal_approval_seconds_count", task_queue=task_queue, tier="service") == 1


# --- the governor's gauges -----------------------------------------------------------------

def governor_registry(read, **options) -> tuple[CollectorRegistry, GovernorCollector]:
    registry = CollectorRegistry()
    collector = GovernorCollector(read, asyncio.get_running_loop(), **options)
    registry.register(collector)
    return registry, collector


def scrape(registry: CollectorRegistry):
    """A scrape, from another thread, as prometheus-client's HTTP server does it."""
    return asyncio.to_thread(lambda: samples(generate_latest(registry)))


async def test_pause_and_breaker_state_come_from_the_governors_status_at_scrape_time():
    now = datetime.now(timezone.utc)
    hold = Hold(by="alice", at=now, reason="maintenance")
    status = GovernorStatus(pause_all=hold, entries=[
        EntryStatus(entry_id="restart-api", paused=[hold], breaker=Hold(by="governor", at=now, reason="3 failures")),
        EntryStatus(entry_id="rollback-checkout", paused=[hold]),
    ])

    async def read():
        return status

    registry, _ = governor_registry(read)
    found = await scrape(registry)
    assert value(found, "selfheal_governor_up") == 1
    assert value(found, "selfheal_paused") == 1
    assert value(found, "selfheal_breaker_open", entry="restart-api") == 1
    assert value(found, "selfheal_breaker_open", entry="rollback-checkout") == 0
    assert value(found, "selfheal_entry_paused", entry="rollback-checkout") == 1


async def test_an_unreadable_governor_is_governor_up_0_and_the_scrape_still_succeeds():
    async def refused():
        raise RuntimeError("Temporal is unreachable")

    async def never():
        await asyncio.Event().wait()

    for read in (refused, never):
        registry, _ = governor_registry(read, timeout=0.3)
        found = await asyncio.wait_for(scrape(registry), 5)
        assert value(found, "selfheal_governor_up") == 0
        assert value(found, "selfheal_paused") is None  # absent, rather than a made-up 0


async def test_the_governors_status_is_read_once_per_ttl_however_often_it_is_scraped():
    calls, clock = [], [0.0]

    async def read():
        calls.append(1)
        return GovernorStatus()

    registry, _ = governor_registry(read, ttl=5.0, clock=lambda: clock[0])
    for _ in range(3):
        await scrape(registry)
    assert len(calls) == 1
    clock[0] = 6.0
    found = await scrape(registry)
    assert len(calls) == 2 and value(found, "selfheal_paused") == 0


# --- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9464", ("::1", 9464)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_metrics_addresses_are_host_and_port(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9464", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "host:٩٤٦٤"])
def test_the_worker_refuses_a_metrics_address_that_is_not_host_and_port(address):
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        WorkerSettings(metrics_address=address)


def test_the_metrics_server_serves_the_registry_and_refuses_a_taken_port(bridge):
    server, thread = serve(bridge.registry, "127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200 and "process_resident_memory_bytes" in answer.text
        with pytest.raises(ValueError, match=r"metrics address '127\.0\.0\.1:\d+': Address already in use"):
            serve(CollectorRegistry(), f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_worker_reads_its_metrics_address_from_the_environment_and_is_off_without_it():
    assert WorkerSettings.from_mapping({"SELFHEAL_METRICS_ADDRESS": "127.0.0.1:9464"}).metrics_address == "127.0.0.1:9464"
    assert WorkerSettings.from_mapping({}).metrics_address is None


# --- the ingress ---------------------------------------------------------------------------

def test_every_state_delivery_answers_with_is_an_answer_the_metrics_know():
    tree = ast.parse(inspect.getsource(delivery_module))
    states = {call.args[-1].value for call in ast.walk(tree)
              if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Delivered"
              and isinstance(call.args[-1], ast.Constant)}
    assert states == set(ANSWERS) - {"rejected", "unavailable"}


async def post_am(http: httpx.AsyncClient, *alerts: dict, headers: dict = BEARER) -> httpx.Response:
    return await http.post("/v1/alerts/alertmanager", content=body(alertmanager(*alerts)), headers=headers)


async def test_the_ingress_counts_every_alert_by_source_and_by_what_it_answered(tmp_path):
    # Temporal of this test's own: a signal limit of 2 makes "saturated" reachable, and
    # stopping it makes "unavailable". No worker: incidents wait, open, on their queue.
    with DevServer(temporal_binary(), tmp_path / "t.db", free_port(), {"history.maximumSignalsPerExecution": 2}) as server:
        client = await server.client()
        app = create_app(settings(), Delivery(client, "metrics-answers", deadline=timedelta(seconds=2)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
            answers = []
            for alert_ in (
                prom_alert(fingerprint="0000000000000b01"),                               # delivered
                prom_alert(fingerprint="0000000000000b01"),                               # already delivered
                {**prom_alert(fingerprint="0000000000000b01"), "annotations": {"n": "2"}},  # delivered (2nd signal)
                {**prom_alert(fingerprint="0000000000000b01"), "annotations": {"n": "3"}},  # saturated
                prom_alert(fingerprint="0000000000000b02", status="resolved"),            # no open incident
            ):
                answers += [i["state"] for i in (await post_am(http, alert_)).json()["incidents"]]
            # An episode whose incident ended: Temporal refuses its start.
            [first] = (await post_am(http, prom_alert(fingerprint="0000000000000b03"))).json()["incidents"]
            await client.get_workflow_handle(first["id"]).terminate("the test ends it")
            again = await post_am(http, {**prom_alert(fingerprint="0000000000000b03"), "annotations": {"n": "2"}})
            answers += [first["state"], again.json()["incidents"][0]["state"]]
            # Refused before anything is read: each request counts once.
            assert (await post_am(http, headers={**BEARER, "Authorization": "Bearer wrong"})).status_code == 401
            assert (await http.post("/v1/alerts/grafana", content=b"{", headers={"Content-Type": "application/json"})).status_code == 401
            data = body(generic(service="checkout"))
            signed = {**BEARER, "X-Selfheal-Signature": f"sha256={sign(SECRET, data)}"}
            assert (await http.post("/v1/alerts/generic", content=data, headers=signed)).status_code == 202
            server.stop()
            down = await post_am(http, prom_alert(fingerprint="0000000000000b04"), prom_alert(fingerprint="0000000000000b05"))
            assert down.status_code == 503, down.text
            found = samples((await http.get("/metrics")).content)

    assert answers == ["delivered", "already delivered", "delivered", "saturated", "no open incident", "delivered", "duplicate"]
    counted = {a: value(found, "selfheal_ingress_alerts_total", source="alertmanager", answer=a) for a in ANSWERS}
    assert counted == {"delivered": 3, "already delivered": 1, "duplicate": 1, "no open incident": 1, "saturated": 1,
                       "rejected": 1, "unavailable": 2}
    assert value(found, "selfheal_ingress_alerts_total", source="grafana", answer="rejected") == 1
    assert value(found, "selfheal_ingress_alerts_total", source="generic", answer="delivered") == 1
    assert value(found, "selfheal_ingress_alerts_total", source="sns", answer="delivered") == 0  # every series exists
    requests = {code: value(found, "selfheal_ingress_requests_total", route="/v1/alerts/alertmanager", code=code)
                for code in ("202", "401", "503")}
    assert requests == {"202": 7, "401": 1, "503": 1}


async def test_ingress_labels_never_carry_alert_text_or_unknown_paths(client, task_queue):
    app = create_app(settings(), Delivery(client, task_queue))
    odd = 'Odd"} evil_total 1e9\n'
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        response = await post_am(http, prom_alert(alertname=odd, fingerprint="0000000000000c01", team=odd))
        assert response.status_code == 202, response.text
        assert (await http.get("/v1/alerts/evil-path-of-the-senders-choosing")).status_code == 404
        metrics = await http.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "evil" not in metrics.text and "Odd" not in metrics.text and "_created" not in metrics.text
    found = samples(metrics.text)
    assert value(found, "selfheal_ingress_requests_total", route="other", code="404") == 1
    assert value(found, "selfheal_ingress_alerts_total", source="alertmanager", answer="delivered") == 1


async def test_each_ingress_app_counts_in_its_own_registry(client, task_queue):
    apps = [create_app(settings(), Delivery(client, task_queue)) for _ in range(2)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://a.test") as a, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b.test") as b:
        assert (await post_am(a, headers={**BEARER, "Authorization": "Bearer wrong"})).status_code == 401
        found_a, found_b = samples((await a.get("/metrics")).content), samples((await b.get("/metrics")).content)
    assert value(found_a, "selfheal_ingress_alerts_total", source="alertmanager", answer="rejected") == 1
    assert value(found_b, "selfheal_ingress_alerts_total", source="alertmanager", answer="rejected") == 0


async def test_ingress_metrics_can_be_turned_off(client, task_queue):
    assert IngressSettings.from_mapping({}).metrics is True
    off = IngressSettings.from_mapping({"SELFHEAL_INGRESS_METRICS": "false"})
    assert off.metrics is False
    with pytest.raises(ValueError):
        IngressSettings.from_mapping({"SELFHEAL_INGRESS_METRICS": "sometimes"})
    app = create_app(off, Delivery(client, task_queue))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        assert (await http.get("/metrics")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
