"""The Grafana dashboard and ``selfheal review`` agree on every figure they share.

One run through the real stack: a ``selfheal worker --metrics-address`` process healing
real systemd units, in a Temporal namespace of this test's own (so the review sees this
test's workflows and no other's), scraped every second by a real Prometheus (a fresh TSDB,
so it holds this run only). The incidents: one healed by itself, one denied by the rate
limit, one approved with an SSH-signed approval (and a typed name that does not count),
one approved by a signed and a typed approval (a tier where typed names count), one
rejected (signed), one expired, one whose restart did not clear the symptom, one shadowed,
one whose diagnosis proposed an entry its alert did not match, one that matched no entry;
and the four drills beside the approval requests: caught, missed, unanswered twice.

At one instant after Prometheus has scraped the final state, every panel expression of
``deploy/monitoring/selfheal-dashboard.json`` that shows a figure the review also reports is
evaluated through Prometheus's HTTP API, and compared with ``selfheal review --json`` (run
as users run it) over the same window. ``SHARED`` says which panel is which figure;
``NO_COUNTERPART`` lists every other panel and why; a panel in neither fails the test.

Grafana's variables, as this test sets them (``grafana_to_promql``):

- ``$__range``: the dashboard's time range, ``RANGE`` (1h). It is longer than the whole
  test, and both sides hold this run only, so the dashboard's range and ``review --since
  1h`` cover the same records. A panel with a fixed window (``[1h]``, ``[1d]``) is compared
  with a review over that window. A panel's window is read from its expression.
- ``$__rate_interval``: 4 x the scrape interval (1 s), Grafana's own floor; ``$__interval``:
  the scrape interval. Only rate panels use them, and no rate is a review figure.
- ``${datasource}``: this test's Prometheus (the expressions do not name it).
- An instant panel is evaluated at the dashboard's "now", a time series panel is read at
  its right edge: both are the one instant ``at`` below.

Values are compared exactly (to float rounding): on a Prometheus younger than the window,
the dashboard's counts are the counters' own values, with no extrapolation. (So the run
takes the "series younger than the window" side of the counting idiom the dashboard shares
with selfheal-rules.yml; its increase() side is promtool's to test.)

The last test keeps one incident from being counted twice when the server refuses the
workflow task that completes it, which this comparison found.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import httpx
from google.protobuf.duration_pb2 import Duration
from prometheus_client import generate_latest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Worker

from selfheal import search
from selfheal import worker as worker_module
from selfheal.activities.diagnose import load_rules
from selfheal.activities.runner import LocalRunner
from selfheal.contract import Approval, AuditRecord, IncidentSettings, Rejection
from selfheal.metrics import DRAIN_EVERY, SdkMetrics
from selfheal.review import Review
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.workflows.drill import DrillWorkflow
from selfheal.workflows.incident import IncidentWorkflow
from tests.conftest import Unit
from tests.ingress.served import free_port
from tests.support.keys import keypair, people_yaml
from tests.support.prometheus import Prometheus, require_prometheus
from tests.test_metrics import samples
from tests.workflows.helpers import FAST, alert, drill_of, ended, offline_aws, start_incident, wait_for, wait_status
from tests.workflows.test_metrics_prometheus import answering, selfheal_process
from tests.workflows.test_signed_approvals import signed
from tests.workflows.test_worker_process import stop

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "monitoring" / "selfheal-dashboard.json"

RANGE = "1h"
SCRAPE_INTERVAL = "1s"
GRAFANA = {"__range": RANGE, "__rate_interval": "4s", "__interval": SCRAPE_INTERVAL}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_WINDOW = re.compile(r"\[(\d+[smhdwy])\]|\boffset\s+(\d+[smhdwy])\b")


def panels() -> list[dict]:
    """The dashboard's panels, rows left out (a collapsed row holds its panels)."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        out += [panel, *panel.get("panels", [])]
    return [p for p in out if p.get("type") != "row"]


def grafana_to_promql(expr: str) -> str:
    """``expr`` with Grafana's variables as this test sets them (the module docstring says how)."""
    def value(found: re.Match) -> str:
        name = found.group(1) or found.group(2)
        assert name in GRAFANA, f"a Grafana variable this test does not set: ${name} in {expr}"
        return GRAFANA[name]

    return _VARIABLE.sub(value, expr)


def window(expr: str) -> str:
    """The one window a compared expression counts over: the review's --since."""
    found = {a or b for a, b in _WINDOW.findall(expr)}
    assert len(found) == 1, f"a compared expression must count over one window, not {sorted(found)}: {expr}"
    return found.pop()


# --- the review's figures --------------------------------------------------------------------

def outcomes(r: Review) -> dict[str, float]:
    e = r.entries
    return {"remediated": sum(f.remediated for f in e), "rejected": sum(f.rejected for f in e),
            "expired": sum(f.expired for f in e), "verification_failed": sum(f.verification_failed for f in e),
            "shadowed": sum(f.shadowed for f in e), "denied": sum(sum(f.denials.values()) for f in e)}


def incidents_by_entry(r: Review) -> dict[str, float]:
    """Per entry; "none" (the metrics' word) is the incidents no decision gave an entry."""
    per = {f.entry: f.incidents for f in r.entries}
    return {**per, "none": r.counts.incidents - sum(per.values())}


def approved(r: Review) -> float:
    return sum(p.approved for p in r.approvers)


def fast(r: Review) -> float:
    return sum(p.fast for p in r.approvers)


def fast_share(r: Review) -> float | None:
    return fast(r) / approved(r) if approved(r) else None


@dataclass(frozen=True)
class Shared:
    """A panel target and the review figure it shows.

    ``by``: the label whose values are compared one by one (a value missing on one side is
    0 there); None: the panel's series summed into one number, compared with one number."""

    by: str | None
    figure: Callable[[Review], float | dict[str, float] | None]
    # Label values the panel shows that the review has no figure of its own for (the total covers them).
    without_figure: frozenset[str] = frozenset()


# Outcomes the review counts only inside its totals and escalations, never per outcome:
# no_remedy and failed may have no entry (the review then counts them per matched entry,
# once per entry, as escalations), world_changed and resolved_without_action are not columns.
OUTCOMES_ONLY_IN_TOTAL = frozenset({"no_remedy", "failed", "world_changed", "resolved_without_action"})

# (panel title, target refId) -> the review's figure.
SHARED: dict[tuple[str, str], list[Shared]] = {
    ("Outcomes in the time range", "A"): [
        Shared("outcome", outcomes, OUTCOMES_ONLY_IN_TOTAL),                    # entries[].remediated, .rejected, ..., denials
        Shared(None, lambda r: r.counts.incidents),                            # counts.incidents
    ],
    ("Incidents by entry in the time range", "A"): [Shared("entry", incidents_by_entry)],  # entries[].incidents
    ("Approvals and fast approvals, by tier (rolling 24h)", "A"): [Shared(None, approved)],  # sum of approvers[].approved
    ("Approvals and fast approvals, by tier (rolling 24h)", "B"): [Shared(None, fast)],      # sum of approvers[].fast
    ("Fast share of approvals in the time range", "A"): [Shared(None, fast_share)],          # sum(.fast) / sum(.approved)
    ("Approval drills by verdict, and missed drills by person, in the time range", "A"): [
        Shared("verdict", lambda r: {"caught": r.drills.caught, "missed": r.drills.missed,
                                     "unanswered": r.drills.unanswered})],                    # drills.caught, .missed, .unanswered
    ("Approval drills by verdict, and missed drills by person, in the time range", "B"): [
        Shared("person", lambda r: {p.person: p.drills_missed for p in r.approvers})],       # approvers[].drills_missed
    ("Verification failures, by entry (rolling 1h)", "A"): [
        Shared("entry", lambda r: {f.entry: f.verification_failed for f in r.entries})],     # entries[].verification_failed
}

# Every other panel, and why the review has nothing to compare it with.
NO_COUNTERPART = {
    "Alerts received, by source and answer (per second)": "the ingress: the review reads incidents, not deliveries",
    "Answers in the time range": "the ingress's answers to senders: not in the review",
    "Bounced to senders (unavailable) in the time range": "the ingress's answers to senders: not in the review",
    "HTTP requests by route and status (per second) -- metric name not final": "the ingress's HTTP requests",
    "Incidents ended, by outcome (per hour)": "a rate; the review counts (its count is 'Outcomes in the time range')",
    "Time to decision, p50 and p90 (1h windows)": "the review has no time to decision",
    "Time to approval, p50 and p90, by tier (6h windows)": "the review's median is per person and exact, "
                                                           "this is per tier and estimated from buckets",
    "Decisions, by kind (per hour)": "a rate of decisions; the review counts incidents by outcome",
    "Actions, by entry and result (per hour)": "a rate of the executor's results; the review counts outcomes",
    "Actions by result in the time range": "the executor's results (executed, already_done, ...): not in the review",
    "Autonomy": "the governor's state now, not a figure over a window",
    "Governor": "whether the governor answers now",
    "Open breakers": "the governor's state now",
    "Breakers, by entry": "the governor's state over time",
    "Scrape targets": "worker health",
    "Schedule-to-start latency, p95": "worker health",
    "Free task slots": "worker health",
    "Failures (per minute)": "worker health",
    "Pollers and workflow cache": "worker health",
}


def targets() -> dict[tuple[str, str], str]:
    return {(p["title"], t["refId"]): t["expr"] for p in panels() for t in p.get("targets", []) if t.get("expr")}


def test_every_panel_is_compared_with_the_review_or_says_why_not():
    titles = {p["title"] for p in panels()}
    assert len(titles) == len(panels()), "panel titles repeat: this test names panels by title"
    shared_titles = {title for title, _ in SHARED}
    assert not shared_titles & set(NO_COUNTERPART), sorted(shared_titles & set(NO_COUNTERPART))
    assert titles == shared_titles | set(NO_COUNTERPART), (
        f"not in SHARED or NO_COUNTERPART: {sorted(titles - shared_titles - set(NO_COUNTERPART))}; "
        f"no longer on the dashboard: {sorted((shared_titles | set(NO_COUNTERPART)) - titles)}")
    # A new target on a compared panel is compared too, or the panel moves to NO_COUNTERPART.
    unmapped = [key for key in targets() if key[0] in shared_titles and key not in SHARED]
    assert not unmapped, unmapped
    for key in SHARED:
        window(grafana_to_promql(targets()[key]))  # each compared expression counts over one window


# --- the run ---------------------------------------------------------------------------------

TIERS = """tiers:
  instance: {approvals: 0}
  service: {approvals: 1, min_review: 1h}            # signed only; every approval here is sooner: fast
  pair: {approvals: 2, channels: [ssh, unverified]}  # a typed name counts; no min_review: never fast
"""


def whitelist(units: dict[str, str], keys: dict[str, str]) -> str:
    def entry(entry_id: str, alertname: str, unit: str, radius: str, more: str = "", verify: str = "10s") -> str:
        return f"""
  - id: {entry_id}
    kind: systemd.restart
    target: {{unit: {unit}, host: localhost, scope: user}}
    blast_radius: {radius}
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: {1 if entry_id == "restart-auto" else 100}, window: 1h}}
    cooldown: 0s
    match: ['alertname="{alertname}"']
    verify: {{timeout: {verify}}}{more}
"""

    return (f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
drills: {{rate: 1}}
{TIERS}{people_yaml(keys) if keys else ''}entries:"""
            + entry("restart-auto", "ApiDown", units["auto"], "instance")
            + entry("restart-broken", "ApiBroken", units["broken"], "instance", verify="2s")
            + entry("restart-service", "ApiSlow", units["service"], "service")
            + entry("restart-pair", "ApiPair", units["pair"], "pair")
            + entry("restart-shadow", "ApiShadow", units["auto"], "instance", more="\n    mode: shadow")
            + entry("restart-misdirected", "Misdirected", units["auto"], "instance"))


RULES = "signatures:\n" + "".join(f"""
  - id: {alertname}
    summary: the test's {alertname}
    match: ['alertname="{alertname}"']
    propose: {entry}
""" for alertname, entry in (("ApiDown", "restart-auto"), ("ApiBroken", "restart-broken"), ("ApiSlow", "restart-service"),
                             ("ApiPair", "restart-pair"), ("ApiShadow", "restart-shadow"),
                             ("Misdirected", "restart-service")))  # an entry its alert does not match

INCIDENTS, DRILLS = 10, 4


async def own_namespace(temporal_env) -> Client:
    """A namespace for this test alone (with selfheal's search attributes), and a client on it."""
    name = f"dashboard-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=Duration(seconds=7 * 86400)))
    client = await Client.connect(temporal_env.client.service_client.config.target_host, namespace=name,
                                  data_converter=pydantic_data_converter)

    async def ready():
        try:
            return await search.available(client, name, create=True) and await search.available(client, name)
        except RPCError:  # not yet known to every service
            return False

    await wait_for(ready, timeout=30, interval=0.2)
    return client


def rejection(approval: Approval) -> Rejection:
    return Rejection(approver=approval.approver, channel=approval.channel, statement=approval.statement,
                     signature=approval.signature)


async def run_incidents(client: Client, task_queue: str, keys: dict[str, str]) -> list[AuditRecord]:
    """The incidents and their drills, answered as the module docstring says; their records."""
    alone, broken, shadow, misdirected, nobody, service, pair, rejected, expired = await asyncio.gather(*(
        start_incident(client, task_queue, alert(name)) for name in
        ("ApiDown", "ApiBroken", "ApiShadow", "Misdirected", "Nobody", "ApiSlow", "ApiPair", "ApiSlow", "ApiSlow")))

    async def drill(incident):
        handle = client.get_workflow_handle(await drill_of(incident), result_type=AuditRecord)
        await wait_status(handle, "awaiting_approval")
        return handle, await handle.query(DrillWorkflow.audit)

    async def answer_service():  # a typed name (does not count here), then alice, signed; alice catches its drill
        await wait_status(service, "awaiting_approval")
        await service.signal(IncidentWorkflow.approve_signal, Approval(approver="bob"))
        record = await service.query(IncidentWorkflow.audit)
        await service.execute_update(IncidentWorkflow.approve, signed(record, keys["alice"], "alice"))
        handle, record = await drill(service)
        await handle.execute_update(DrillWorkflow.reject, rejection(signed(record, keys["alice"], "alice", action="reject")))

    async def answer_pair():  # alice signed, bob typed (counts in this tier); bob misses its drill
        await wait_status(pair, "awaiting_approval")
        record = await pair.query(IncidentWorkflow.audit)
        await pair.execute_update(IncidentWorkflow.approve, signed(record, keys["alice"], "alice"))
        await pair.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
        handle, record = await drill(pair)
        await handle.execute_update(DrillWorkflow.approve, signed(record, keys["bob"], "bob"))

    async def answer_rejected():
        await wait_status(rejected, "awaiting_approval")
        record = await rejected.query(IncidentWorkflow.audit)
        await rejected.execute_update(IncidentWorkflow.reject, rejection(signed(record, keys["bob"], "bob", action="reject")))

    async def denied_after_alone():  # the entry may run once an hour: the second is denied
        await alone.result()
        return await start_incident(client, task_queue, alert("ApiDown"))

    *_, again = await asyncio.gather(answer_service(), answer_pair(), answer_rejected(), denied_after_alone())
    incidents = [alone, again, broken, shadow, misdirected, nobody, service, pair, rejected, expired]
    drills = [client.get_workflow_handle(await drill_of(h), result_type=AuditRecord) for h in (service, pair, rejected, expired)]
    records = await asyncio.wait_for(asyncio.gather(*(ended(h) for h in incidents + drills)), 90)
    assert [r.outcome for r in records] == [
        "remediated", "denied", "verification_failed", "shadowed", "no_remedy", "no_remedy", "remediated", "remediated",
        "rejected", "expired", "drill_caught", "drill_missed", "drill_unanswered", "drill_unanswered",
    ], [(r.incident_id, r.outcome, r.outcome_detail) for r in records]
    assert len(incidents) == INCIDENTS and len(drills) == DRILLS
    return records


def review_json(client: Client, since: str, whitelist_path: Path) -> Review:
    """``selfheal review --json`` as users run it."""
    done = subprocess.run([sys.executable, "-m", "selfheal.cli", "review", "--json", "--since", since,
                           "--whitelist", str(whitelist_path), "--address", client.service_client.config.target_host,
                           "--namespace", client.namespace], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")})
    assert done.returncode == 0, done.stderr
    return Review.model_validate_json(done.stdout)


def series(result: list[dict], by: str | None) -> dict[str, float]:
    if by is None:
        return {"": sum(float(r["value"][1]) for r in result)} if result else {}
    out: dict[str, float] = {}
    for r in result:
        key = r["metric"].get(by, "")
        assert key not in out, f"two series for {by}={key!r}: {result}"
        out[key] = float(r["value"][1])
    return out


def disagreements(title: str, ref: str, expr: str, shown: dict[str, float], wanted, check: Shared) -> list[str]:
    where = f"{title!r} {ref} ({expr})"
    if check.by is None:
        got = shown.get("")
        if wanted is None or got is None:
            return [] if wanted is None and (got is None or math.isnan(got)) else [f"{where}: dashboard {got}, review {wanted}"]
        return [] if math.isclose(got, wanted, rel_tol=1e-9, abs_tol=1e-9) else [f"{where}: dashboard {got}, review {wanted}"]
    out = []
    for key in sorted(set(shown) | set(wanted)):
        if key in check.without_figure and key not in wanted:
            continue
        if key not in wanted and key not in check.without_figure and shown[key] != 0:
            # A value the table does not know: a new outcome needs a figure, or a place in without_figure.
            out.append(f"{where}: {check.by}={key!r} {shown[key]} on the dashboard, no review figure")
            continue
        got, want = shown.get(key, 0.0), wanted.get(key, 0)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            out.append(f"{where}: {check.by}={key!r}: dashboard {got}, review {want}")
    return out


async def final_state(prom: Prometheus, minimum: dict[str, float], closed_at: float, log: Path) -> float:
    """The first instant at which Prometheus holds everything the run counted: each sum in
    ``minimum`` has reached its value, and the worker's latest scrape began after its last
    drain of what the workflows recorded before ``closed_at``. Values are compared later,
    so counting too much shows there, as a disagreement."""
    after = closed_at + DRAIN_EVERY + 0.5  # the worker drains its meter every DRAIN_EVERY
    seen: dict[str, list] = {}

    async def probe():
        at = time.time()
        for promql in ['timestamp(up{job="selfheal-worker"})', *minimum]:
            seen[promql] = [r["value"][1] for r in (await asyncio.to_thread(prom.query, promql, at))["result"]]
        scraped = seen.pop('timestamp(up{job="selfheal-worker"})')
        done = scraped and float(scraped[0]) > after and all(
            len(seen[q]) == 1 and float(seen[q][0]) >= v for q, v in minimum.items())
        return at if done else None

    try:
        return await wait_for(probe, timeout=30, interval=0.25)
    except AssertionError:
        raise AssertionError(f"Prometheus never held the final state: wanted at least {minimum}, has {seen}\n"
                             f"{log.read_text()[-6000:]}") from None


async def test_the_dashboard_and_the_review_agree_on_every_figure_they_share(temporal_env, tmp_path, unit, systemd_user):
    require_prometheus()
    units: dict[str, Unit] = {"auto": unit}
    keys = dict(zip(("alice", "bob"), await asyncio.gather(*(asyncio.to_thread(keypair, tmp_path, p) for p in ("alice", "bob")))))
    worker_at, task_queue, log = f"127.0.0.1:{free_port()}", f"dashboard-{uuid.uuid4().hex[:8]}", tmp_path / "worker.log"
    proc, code = None, None
    try:
        made = await asyncio.gather(*(asyncio.to_thread(Unit, systemd_user, tmp_path) for _ in range(3)), return_exceptions=True)
        units.update((name, u) for name, u in zip(("broken", "service", "pair"), made) if isinstance(u, Unit))
        for failed in (u for u in made if not isinstance(u, Unit)):
            raise failed
        units["broken"].fail_flag.touch()  # its restart cannot fix it: verification fails
        client = await own_namespace(temporal_env)
        wl = tmp_path / "whitelist.yaml"
        wl.write_text(whitelist({k: u.name for k, u in units.items()}, {p: k[1] for p, k in keys.items()}))
        (tmp_path / "rules.yaml").write_text(RULES)
        with Prometheus(None, scrape_interval=SCRAPE_INTERVAL, jobs={"selfheal-worker": [worker_at]}) as prom:
            proc = selfheal_process(["worker", "--metrics-address", worker_at], {
                "TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace,
                "SELFHEAL_TASK_QUEUE": task_queue, "SELFHEAL_WHITELIST": str(wl),
                "SELFHEAL_DIAGNOSIS": str(tmp_path / "rules.yaml"),
                "SELFHEAL_COMMAND_PREFIX": shlex.join(systemd_user.ns_command_prefix),
                # Approval requests (and drills) expire within the test; the others are answered at once.
                "SELFHEAL_REMIND_AFTER": "2s", "SELFHEAL_ESCALATE_AFTER": "4s", "SELFHEAL_EXPIRE_AFTER": "8s",
            }, log)
            await answering(f"http://{worker_at}/metrics", proc, log)
            records = await run_incidents(client, task_queue, {p: k[0] for p, k in keys.items()})
            closed_at = time.time()

            # Both sides have the final state: Temporal's visibility has every close...
            closed = "(WorkflowType = 'IncidentWorkflow' OR WorkflowType = 'DrillWorkflow') AND ExecutionStatus != 'Running'"
            await wait_for(lambda: _count(client, closed, len(records)), timeout=30, interval=0.2)
            # ...and Prometheus has scraped everything the workflows counted.
            at = await final_state(prom, {"sum(selfheal_incidents_total)": INCIDENTS, "sum(selfheal_drills_total)": DRILLS,
                                          "sum(selfheal_drill_verdicts_total)": 2 * DRILLS,
                                          "sum(selfheal_approval_seconds_count)": 3,
                                          "sum(selfheal_verification_failures_total)": 1}, closed_at, log)

            # One instant: every compared expression, at ``at``.
            exprs = {key: grafana_to_promql(targets()[key]) for key in SHARED}
            answers = {key: (await asyncio.to_thread(prom.query, expr, at))["result"] for key, expr in exprs.items()}
            windows = sorted({window(expr) for expr in exprs.values()})
            reviews = dict(zip(windows, await asyncio.gather(*(asyncio.to_thread(review_json, client, w, wl) for w in windows))))
    finally:
        if proc is not None:
            code = stop(proc)
        for u in units.values():
            if u is not unit:  # the fixture removes its own
                u.remove()
    assert code == 0, log.read_text()[-3000:]

    for review in reviews.values():  # the review read exactly this run's records
        assert (review.counts.incidents, review.counts.drills, review.counts.open_incidents, review.counts.unreadable) == (
            INCIDENTS, DRILLS, 0, [])
    problems = []
    for key, checks in SHARED.items():
        review = reviews[window(exprs[key])]
        for check in checks:
            problems += disagreements(*key, exprs[key], series(answers[key], check.by), check.figure(review), check)
    assert not problems, "the dashboard and the review disagree:\n" + "\n".join(problems)


async def _count(client: Client, query: str, expected: int) -> bool:
    return (await client.count_workflows(query)).count == expected


# --- counted once, even when the last workflow task runs twice ------------------------------------

BATCH, MAX_BATCHES = 30, 10


async def test_an_incident_whose_completion_the_server_refuses_is_still_counted_once(temporal_env, tmp_path):
    """Found by the test above: the dashboard counted one incident more than the review.

    An unanswered incident and its drill expire together, so the drill's end often reaches
    the incident's history while the incident's last workflow task is completing it. The
    server refuses that completion (UNHANDLED_COMMAND) and the task runs again, not as a
    replay: whatever it recorded is recorded twice. Batches of such pairs run until the
    server has refused at least one completion; each incident and drill must count once."""
    bridge, task_queue = SdkMetrics(), f"refused-{uuid.uuid4().hex[:8]}"
    (tmp_path / "wl.yaml").write_text(whitelist({k: "unused.service" for k in ("auto", "broken", "service", "pair")}, {}))
    (tmp_path / "rules.yaml").write_text(RULES)
    quick = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=1),
                                "escalate_after": timedelta(seconds=1), "expire_after": timedelta(seconds=1)})
    settings = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"),
                              diagnosis=str(tmp_path / "rules.yaml"), incident=quick)
    client = await Client.connect(temporal_env.client.service_client.config.target_host,
                                  data_converter=pydantic_data_converter, runtime=bridge.runtime)
    refused, started = [], 0
    async with httpx.AsyncClient() as http:
        activities = worker_module.build_activities(settings, load_whitelist(settings.whitelist), load_rules(settings.diagnosis),
                                                    client, LocalRunner(), http, False, offline_aws())
        async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS, activities=activities,
                          workflow_runner=worker_module.WORKFLOW_RUNNER), worker_module.governor_worker(client, task_queue):
            for _ in range(MAX_BATCHES):
                incidents = await asyncio.gather(*(start_incident(client, task_queue, alert("ApiSlow")) for _ in range(BATCH)))
                drills = [client.get_workflow_handle(await drill_of(h), result_type=AuditRecord) for h in incidents]
                records = await asyncio.gather(*(h.result() for h in incidents + drills))
                assert {r.outcome for r in records} == {"expired", "drill_unanswered"}
                started += BATCH
                for handle in incidents:
                    refused += [handle.id for e in (await handle.fetch_history()).events
                                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                                and e.workflow_task_failed_event_attributes.cause
                                == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND]
                if refused:
                    break
    assert refused, f"in {started} pairs the server never refused an incident's completion: nothing was tested"
    bridge.drain()
    found = samples(generate_latest(bridge.registry))
    counted = {name: sum(v for (n, _), v in found.items() if n == name)
               for name in ("selfheal_incidents_total", "selfheal_drills_total")}
    assert counted == {"selfheal_incidents_total": started, "selfheal_drills_total": started}, (
        f"{started} incidents and drills; refused completions: {refused}")
