"""deploy/monitoring: the alert rules, their promtool unit tests, and the Grafana dashboard.

promtool (Debian's ``prometheus`` package) checks the rules, runs the unit tests, and parses
every dashboard expression for real (as a recording rule in a throwaway rules file). The
dashboard and the rules may only use metric names the worker and ingress export: the
workflow counters and histograms come from ``selfheal.workflows.metrics``, and the
Temporal SDK's ``temporal_*`` names are read back from a real worker's exposition
(``selfheal.metrics.SdkMetrics`` on the dev server), so a change of suffix fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.worker import Worker

from selfheal.workflows import metrics
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "selfheal-rules.yml"
PROMTOOL_TESTS = MONITORING / "promtool-tests.yml"
DASHBOARD = MONITORING / "selfheal-dashboard.json"
DEBIAN_PROMTOOL = "/usr/bin/promtool"

# What the worker exports from workflow code (counters get ``_total`` from the exporter).
WORKFLOW_METRICS = (
    {name + "_total" for name in (metrics.INCIDENTS, metrics.ACTIONS, metrics.VERIFICATION_FAILURES,
                                  metrics.DRILLS, metrics.DRILL_VERDICTS, metrics.FAST_APPROVALS,
                                  metrics.UNDELIVERED)}
    | {name + suffix for name in (metrics.DECISION_SECONDS, metrics.APPROVAL_SECONDS)
       for suffix in ("_bucket", "_sum", "_count")}
)
# Gauges the worker sets outside workflow code (from the governor's status), and the ingress's counter.
WORKER_GAUGES = {"selfheal_paused", "selfheal_breaker_open", "selfheal_governor_up"}
INGRESS_METRICS = {"selfheal_ingress_alerts_total"}
# The ingress's HTTP request counter: its name is not final, so no rule may use it, and
# the one dashboard panel that does says so in its title.
PROVISIONAL = {"selfheal_ingress_requests_total"}
PROVISIONAL_MARK = "metric name not final"
# The Temporal SDK's own, as selfheal.metrics exports them (counters _total, latencies in
# seconds with _seconds); test_temporal_names_are_what_a_real_worker_exports reads them back.
TEMPORAL_METRICS = {
    "temporal_activity_execution_failed_total",
    "temporal_activity_task_received_total",
    "temporal_long_request_total",
    "temporal_request_total",
    "temporal_sticky_cache_hit_total",
    "temporal_worker_start_total",
    "temporal_workflow_completed_total",
    "temporal_workflow_failed_total",
    "temporal_workflow_task_execution_failed_total",
    "temporal_workflow_task_queue_poll_succeed_total",
    "temporal_num_pollers",
    "temporal_sticky_cache_size",
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    *(name + "_seconds" + suffix
      for name in ("temporal_activity_execution_latency", "temporal_activity_schedule_to_start_latency",
                   "temporal_activity_succeed_endtoend_latency", "temporal_long_request_latency",
                   "temporal_request_latency", "temporal_workflow_endtoend_latency",
                   "temporal_workflow_task_execution_latency", "temporal_workflow_task_replay_latency",
                   "temporal_workflow_task_schedule_to_start_latency")
      for suffix in ("_bucket", "_sum", "_count")),
}
EXPORTED = WORKFLOW_METRICS | WORKER_GAUGES | INGRESS_METRICS | TEMPORAL_METRICS | {"up"}

# Grafana's interval variables, replaced by durations so promtool can parse the expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
SEVERITIES = {"critical", "warning", "info"}


# --- helpers -------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool") or (DEBIAN_PROMTOOL if os.access(DEBIAN_PROMTOOL, os.X_OK) else None)
    require("promtool", None if path else f"{DEBIAN_PROMTOOL} missing (apt-get install prometheus)")
    assert path is not None
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'   # strings
    r'|\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\}'               # label matchers
    r"|\[[^\]]*\]"                                      # ranges and subqueries
    r"|\$\{?\w+\}?"                                     # Grafana variables
    r"|\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]*"            # numbers and durations
    r"|[A-Za-z_:][\w:]*"                                # identifiers
    r"|\S",
    re.IGNORECASE,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregations may put their grouping clause before the parenthesis (`sum by (x) (...)`).
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                 "bottomk", "topk", "quantile"}
_KEYWORDS = _GROUPING | _AGGREGATIONS | {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, or label names in a grouping clause."""
    tokens = _TOKEN.findall(expr)
    names, i = set(), 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token.lower() in _GROUPING and following == "(":
            i = tokens.index(")", i)
        elif re.fullmatch(r"[A-Za-z_:][\w:]*", token) and token.lower() not in _KEYWORDS and following != "(":
            names.add(token)
        i += 1
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in out if p.get("type") != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", []) if t.get("expr")]


def used_names() -> set[str]:
    exprs = [rule["expr"] for rule in rules()] + [expr for _, expr in dashboard_exprs()]
    return set().union(*(metric_names(expr) for expr in exprs))


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


# --- promtool --------------------------------------------------------------------------------

def test_rules_pass_promtool_check():
    result = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", str(PROMTOOL_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_dashboard_expression_parses_as_promql(tmp_path):
    exprs = dashboard_exprs()
    throwaway = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(throwaway, sort_keys=False))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_a_broken_expression_is_refused_by_the_same_check(tmp_path):
    # The check above would be worthless if promtool accepted anything.
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "broken", "expr": "sum by (le (rate(selfheal_incidents_total[5m]))"}]}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


# --- the rules ---------------------------------------------------------------------------------

def test_every_alert_says_how_long_how_bad_and_what_to_do():
    problems = []
    for alert in alerts():
        name = alert["alert"]
        if not alert.get("for"):
            problems.append(f"{name}: no `for:`")
        if alert.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {alert.get('labels', {}).get('severity')!r} not in {sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if not alert.get("annotations", {}).get(key, "").strip():
                problems.append(f"{name}: no {key} annotation")
    assert not problems, "\n".join(problems)


def test_the_alerts_the_brief_asks_for_exist():
    names = {alert["alert"] for alert in alerts()}
    assert {
        "SelfhealWorkerDown", "SelfhealIngressDown", "SelfhealIngressUnavailable",
        "SelfhealVerificationFailuresRising", "SelfhealBreakerOpen", "SelfhealAutonomyPausedLong",
        "SelfhealGovernorUnreadable", "SelfhealDrillMissed", "SelfhealRubberStamping",
        "SelfhealApprovalsSlow", "SelfhealWorkflowTaskBacklog",
    } <= names


def test_every_alert_is_unit_tested_firing_and_not_firing():
    fires, quiet = set(), set()
    for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert not names - fires, f"never seen firing in {PROMTOOL_TESTS.name}: {sorted(names - fires)}"
    assert not names - quiet, f"never seen staying quiet in {PROMTOOL_TESTS.name}: {sorted(names - quiet)}"


def test_rules_use_only_exported_metrics():
    known = EXPORTED | recorded()
    unknown = {(rule.get("alert") or rule["record"], name)
               for rule in rules() for name in metric_names(rule["expr"]) if name not in known}
    assert not unknown, f"not exported by selfheal: {sorted(unknown)}"


def test_temporal_metrics_are_read_from_the_selfheal_worker_only():
    # Another application's Temporal worker in the same Prometheus must not page selfheal's on-call.
    exprs = [rule["expr"] for rule in rules()] + [expr for _, expr in dashboard_exprs()]
    loose = [expr for expr in exprs for m in re.finditer(r"\btemporal_\w+(\{[^}]*\})?", expr)
             if 'job="selfheal-worker"' not in (m.group(1) or "")]
    assert not loose, loose


# --- the dashboard ---------------------------------------------------------------------------

def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable():
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]] + [p["id"] for p in dashboard_panels() if p not in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_dashboard_has_the_rows_asked_for():
    rows = [p["title"] for p in dashboard()["panels"] if p.get("type") == "row"]
    assert rows == ["Alerts in", "Incidents", "Decisions and approvals", "Actions", "Safety", "Worker health"]


def test_every_panel_has_a_promql_target():
    empty = [p["title"] for p in dashboard_panels()
             if not [t for t in p.get("targets", []) if t.get("expr", "").strip()]]
    assert not empty, f"panels without a PromQL target: {empty}"


def test_no_datasource_uid_is_hard_coded():
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    uid = value.get("uid") if isinstance(value, dict) else value
                    if uid not in ("${datasource}", "$datasource"):
                        found.append(f"{where}: {value!r}")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(dashboard()["panels"], "panels")
    walk(dashboard().get("annotations", {}), "annotations")
    assert not found, found


def test_dashboard_uses_only_exported_metrics():
    known = EXPORTED | recorded()
    unknown = {(title, name) for title, expr in dashboard_exprs() for name in metric_names(expr)
               if name not in known and not (name in PROVISIONAL and PROVISIONAL_MARK in title)}
    assert not unknown, f"not exported by selfheal (or not marked {PROVISIONAL_MARK!r}): {sorted(unknown)}"
    provisional = {title for title, expr in dashboard_exprs() if metric_names(expr) & PROVISIONAL}
    assert len(provisional) <= 1, f"the provisional HTTP counter belongs in one panel at most: {sorted(provisional)}"


def test_every_workflow_metric_appears_on_the_dashboard():
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    families = {name.rsplit("_", 1)[0] if name.endswith(("_bucket", "_sum", "_count")) else name
                for name in shown}
    wanted = {metrics.INCIDENTS + "_total", metrics.ACTIONS + "_total", metrics.VERIFICATION_FAILURES + "_total",
              metrics.DRILLS + "_total", metrics.DRILL_VERDICTS + "_total", metrics.FAST_APPROVALS + "_total",
              metrics.DECISION_SECONDS,
              metrics.APPROVAL_SECONDS, *WORKER_GAUGES, *INGRESS_METRICS}
    assert not wanted - families, sorted(wanted - families)


@pytest.mark.parametrize("expr, names", [
    ('sum by (le) (rate(a_total{x="y", le=~"1|2"}[5m])) / on () group_left () b offset 1d', {"a_total", "b"}),
    ("histogram_quantile(0.9, sum(rate(c_bucket[$__rate_interval])) by (le, tier)) > 2 and d", {"c_bucket", "d"}),
    ("max(e) == 1 or vector(0) unless absent(f)", {"e", "f"}),
])
def test_metric_names_finds_selectors_and_nothing_else(expr, names):
    assert metric_names(expr) == names


# --- the names, read back from what selfheal exports ---------------------------------------------

probe_failed_once: set[str] = set()


@activity.defn(name="monitoring_probe_fails")
async def probe_fails() -> None:
    raise RuntimeError("a failing activity, for temporal_activity_execution_failed_total")


@workflow.defn(name="MonitoringProbe", sandboxed=False)
class MonitoringProbe:
    """Makes a worker record what the rules and dashboard read: a workflow task that fails
    once (then succeeds on retry), and an activity that fails."""

    @workflow.run
    async def run(self) -> None:
        if workflow.info().workflow_id not in probe_failed_once:
            probe_failed_once.add(workflow.info().workflow_id)
            raise RuntimeError("a failing workflow task, for temporal_workflow_task_execution_failed_total")
        try:
            await workflow.execute_activity(probe_fails, start_to_close_timeout=timedelta(seconds=10),
                                            retry_policy=RetryPolicy(maximum_attempts=1))
        except ActivityError:
            pass


async def test_temporal_names_are_what_a_real_worker_exports(temporal_env, task_queue):
    from selfheal.metrics import SdkMetrics

    sdk = SdkMetrics()
    client = await Client.connect(temporal_env.client.service_client.config.target_host,
                                  namespace=temporal_env.client.namespace, runtime=sdk.runtime)
    async with Worker(client, task_queue=task_queue, workflows=[MonitoringProbe], activities=[probe_fails]):
        await client.execute_workflow(MonitoringProbe.run, id=f"monitoring-probe-{uuid.uuid4().hex[:8]}",
                                      task_queue=task_queue, execution_timeout=timedelta(seconds=60))
        sdk.drain()
        text = generate_latest(sdk.registry).decode()
    exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    used = {name for name in used_names() if name.startswith("temporal_")}
    assert used, "the rules and dashboard read no temporal_ metric"
    assert not used - exported, f"used but not exported by a real worker: {sorted(used - exported)}"
    assert not used - TEMPORAL_METRICS


def test_ingress_names_are_what_the_ingress_exports():
    from selfheal.ingress.metrics import IngressMetrics

    body, _ = IngressMetrics().exposition()
    exported = {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    used = {name for name in used_names() if name.startswith("selfheal_ingress_")} - PROVISIONAL
    assert INGRESS_METRICS <= used
    assert not used - exported, f"used but not exported by the ingress: {sorted(used - exported)}"
