"""The deploy examples: Alertmanager, Grafana and Prometheus configured for selfheal.

Each file is checked by the tool that owns its format (`amtool check-config`, `amtool
config routes test`, `promtool check config`), and each check is shown to fail on a broken
copy. Grafana has no binary here: its files are checked against the fields Grafana's
provisioning reads, and the header it would send goes through the real ingress. The
Alertmanager example runs for real: Debian's Alertmanager delivers to the real ingress
(real Temporal) with the token from its credentials_file, and pages people too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute

from selfheal.ingress.app import create_app
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from tests.conftest import ROOT, require
from tests.ingress.payloads import body, grafana, incidents_for, key, prom_alert
from tests.ingress.served import serving
from tests.support.alertmanager import Alertmanager
from tests.workflows.helpers import LoopbackHTTP, wait_for

ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"
CONTACT_POINT = ROOT / "deploy/grafana/contact-point.yaml"
POLICY = ROOT / "deploy/grafana/notification-policy.yaml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
RULES = ROOT / "deploy/monitoring/selfheal-rules.yml"
DASHBOARD = ROOT / "deploy/monitoring/selfheal-dashboard.json"
EXAMPLES = [ALERTMANAGER, CONTACT_POINT, POLICY, PROMETHEUS]

# What Grafana's provisioning reads (grafana/grafana pkg/services/provisioning/alerting/
# contact_point_types.go, notification_policy_types.go) and what its webhook integration
# accepts (grafana/alerting receivers/webhook: the settings' JSON names).
GRAFANA_FILE_KEYS = {"apiVersion", "contactPoints", "deleteContactPoints", "policies", "resetPolicies",
                     "templates", "deleteTemplates", "muteTimes", "deleteMuteTimes", "groups", "deleteRules"}
WEBHOOK_SETTINGS = {"url", "httpMethod", "maxAlerts", "authorization_scheme", "authorization_credentials",
                    "username", "password", "title", "message", "tlsConfig", "hmacConfig", "headers", "payload"}
POLICY_KEYS = {"orgId", "receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "routes",
               "object_matchers", "matchers", "continue", "mute_time_intervals", "active_time_intervals"}
GRAFANA_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
# Grafana's expanders (pkg/setting/expanders.go), then os.ExpandEnv for $VAR.
EXPANDER = re.compile(r"\$(|__\w+)\{([^}]+)\}")
SECRET_KEYS = {"credentials", "password", "routing_key", "service_key", "api_key", "bearer_token", "token",
               "secret", "authorization_credentials", "auth_password", "bot_token"}
# A token written out anywhere, comments included ("Bearer <token>" is a placeholder, not one).
INLINE_TOKEN = re.compile(r"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/=-]{8,}")


# --- helpers -----------------------------------------------------------------------------------

def binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    require(name, None if path else f"/usr/bin/{name} missing (apt-get install {package})")
    assert path is not None
    return path


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)


def amtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run(binary("amtool", "prometheus-alertmanager"), *args, cwd=cwd)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run(binary("promtool", "prometheus"), *args, cwd=cwd)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ingress_routes() -> set[tuple[str, str]]:
    app = create_app(IngressSettings(), delivery=None)  # type: ignore[arg-type]  # routes only
    return {(method, r.path) for r in app.routes if isinstance(r, APIRoute) for method in r.methods}


def selfheal_webhook(config: dict) -> dict:
    [receiver] = [r for r in config["receivers"] if r["name"] == "selfheal"]
    [webhook] = receiver["webhook_configs"]
    return webhook


def grafana_webhook() -> tuple[dict, dict]:
    [point] = load(CONTACT_POINT)["contactPoints"]
    [receiver] = point["receivers"]
    return point, receiver


def grafana_interpolate(value: str, env: dict[str, str]) -> str:
    """What Grafana's provisioning makes of a string value: ``$$`` is a literal ``$``;
    ``$__file{PATH}`` the file's trimmed content (an error when it is missing);
    ``$__env{X}``, ``${X}`` and ``$X`` the environment variable."""
    def expand(part: str) -> str:
        def one(m: re.Match) -> str:
            kind, arg = m.groups()
            if kind == "__file":
                return Path(arg).read_text().strip()
            if kind in ("", "__env"):
                return env.get(arg, "")
            raise AssertionError(f"expander ${kind}{{...}} needs a Grafana plugin: {value!r}")
        return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), EXPANDER.sub(one, part))
    return "$".join(expand(part) for part in value.split("$$"))


def as_alertmanager_route(policy: dict) -> dict:
    """A Grafana policy as an Alertmanager route: Grafana routes with Alertmanager's code."""
    route = {k: v for k, v in policy.items() if k not in ("orgId", "object_matchers", "routes")}
    if policy.get("object_matchers"):
        route["matchers"] = [f'{name}{op}"{value}"' for name, op, value in policy["object_matchers"]]
    if policy.get("routes"):
        route["routes"] = [as_alertmanager_route(child) for child in policy["routes"]]
    return route


def receivers_for(config_path: Path, labels: dict[str, str]) -> list[str]:
    result = amtool("config", "routes", "test", f"--config.file={config_path}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def own_alerts() -> list[dict[str, str]]:
    groups = load(RULES)["groups"]
    return [{"alertname": r["alert"], **r.get("labels", {})} for g in groups for r in g["rules"] if "alert" in r]


HEALABLE = {"alertname": "DemoApiDown", "service": "demo-api", "instance": "host-1", "selfheal": "true"}
ROUTING = [
    (HEALABLE, ["selfheal", "oncall"]),
    ({**HEALABLE, "selfheal": "false"}, ["oncall"]),
    ({k: v for k, v in HEALABLE.items() if k != "selfheal"}, ["oncall"]),
    ({"alertname": "SelfhealWorkerDown", "severity": "critical", "selfheal": "true"}, ["oncall"]),
]


# --- Alertmanager ------------------------------------------------------------------------------

def test_alertmanager_example_passes_amtool_check_config(tmp_path):
    # amtool does not open credentials_file or routing_key_file (Alertmanager 0.25: a
    # missing file passes), so the copy needs nothing beside it.
    shutil.copy(ALERTMANAGER, tmp_path / "alertmanager.yml")
    result = amtool("check-config", "alertmanager.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "2 receivers" in result.stdout


def test_a_broken_alertmanager_config_fails_the_same_check(tmp_path):
    text = ALERTMANAGER.read_text().replace("- receiver: selfheal", "- receiver: selfhea1")
    (tmp_path / "alertmanager.yml").write_text(text)
    result = amtool("check-config", "alertmanager.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert 'undefined receiver "selfhea1"' in result.stdout + result.stderr


@pytest.mark.parametrize("labels, receivers", ROUTING, ids=["healable", "label-false", "no-label", "own-alert"])
def test_alertmanager_routes_healable_alerts_to_selfheal_and_people(labels, receivers):
    assert receivers_for(ALERTMANAGER, labels) == receivers


def test_selfheals_own_alerts_page_people_and_never_reach_selfheal():
    for labels in own_alerts():
        assert receivers_for(ALERTMANAGER, {**labels, "selfheal": "true"}) == ["oncall"], labels


def test_without_the_catch_all_a_healable_alert_would_page_nobody(tmp_path):
    # Why the last route exists, and proof that the routing check can fail.
    config = load(ALERTMANAGER)
    assert config["route"]["routes"][-1] == {"receiver": "oncall"}
    config["route"]["routes"].pop()
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    assert receivers_for(tmp_path / "alertmanager.yml", HEALABLE) == ["selfheal"]


def test_alertmanager_webhook_is_the_ingress_route_with_a_token_from_a_file():
    webhook = selfheal_webhook(load(ALERTMANAGER))
    url = urlsplit(webhook["url"])
    assert ("POST", url.path) in ingress_routes() and url.path == "/v1/alerts/alertmanager"
    assert url.scheme == "https" and not url.query
    assert webhook["send_resolved"] is True  # resolved alerts end incidents
    assert webhook["max_alerts"] == 0
    authorization = webhook["http_config"]["authorization"]
    assert authorization == {"type": "Bearer", "credentials_file": authorization["credentials_file"]}
    assert Path(authorization["credentials_file"]).is_absolute()


# --- Grafana -----------------------------------------------------------------------------------

def test_grafana_contact_point_has_the_fields_grafana_provisioning_reads():
    document = load(CONTACT_POINT)
    assert document["apiVersion"] == 1 and set(document) <= GRAFANA_FILE_KEYS
    point, receiver = grafana_webhook()
    assert set(point) == {"orgId", "name", "receivers"} and point["orgId"] >= 1 and point["name"].strip()
    assert set(receiver) <= {"uid", "type", "settings", "disableResolveMessage"}
    assert GRAFANA_UID.fullmatch(receiver["uid"]) and receiver["type"] == "webhook"
    assert receiver["disableResolveMessage"] is False  # resolved alerts end incidents
    settings = receiver["settings"]
    assert set(settings) <= WEBHOOK_SETTINGS, set(settings) - WEBHOOK_SETTINGS
    assert settings["httpMethod"] == "POST" and settings["maxAlerts"] == 0
    assert settings["authorization_scheme"] == "Bearer" and not {"username", "password"} & set(settings)
    assert EXPANDER.fullmatch(settings["authorization_credentials"]), "the token must come from a file or variable"


def test_grafana_contact_point_url_is_the_ingress_route():
    url = urlsplit(grafana_webhook()[1]["settings"]["url"])
    assert ("POST", url.path) in ingress_routes() and url.path == "/v1/alerts/grafana"
    assert url.scheme == "https" and not url.query


def test_grafana_hmac_header_names_in_the_example_are_the_ingress_s():
    from selfheal.ingress import auth

    text = CONTACT_POINT.read_text().lower()
    assert f"header: {auth.GRAFANA_SIGNATURE}" in text and f"timestampheader: {auth.GRAFANA_TIMESTAMP}" in text


async def test_the_header_grafana_sends_is_accepted_by_the_ingress(client, task_queue, tmp_path):
    token_file = tmp_path / "selfheal-token"
    token_file.write_text(f"grafana-{uuid.uuid4().hex}\n")
    settings = grafana_webhook()[1]["settings"]
    reference = settings["authorization_credentials"].replace("/etc/grafana/secrets/selfheal-token", str(token_file))
    header = f"{settings['authorization_scheme']} {grafana_interpolate(reference, env={})}"
    ingress = IngressSettings.from_mapping({"SELFHEAL_INGRESS_GRAFANA_TOKEN_FILE": str(token_file)})
    app = create_app(ingress, Delivery(client, task_queue, search_attributes=True))
    data = body(grafana(prom_alert(fingerprint=uuid.uuid4().hex[:16])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as http:
        path = urlsplit(settings["url"]).path
        wrong = await http.post(path, content=data, headers={"Authorization": header + "x",
                                                             "Content-Type": "application/json"})
        assert wrong.status_code == 401
        response = await http.post(path, content=data, headers={"Authorization": header,
                                                                "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert [i["state"] for i in response.json()["incidents"]] == ["delivered"]


def test_grafana_interpolation_reads_files_and_variables_and_keeps_double_dollars(tmp_path):
    (tmp_path / "t").write_text("  tok\n")
    assert grafana_interpolate(f"$__file{{{tmp_path / 't'}}}", {}) == "tok"
    assert grafana_interpolate("${A}-$A-$__env{A}-$$A", {"A": "x"}) == "x-x-x-$A"
    with pytest.raises(FileNotFoundError):
        grafana_interpolate("$__file{/nonexistent/selfheal-token}", {})


def test_grafana_policy_is_a_tree_grafana_provisioning_reads():
    document = load(POLICY)
    assert document["apiVersion"] == 1 and set(document) <= GRAFANA_FILE_KEYS
    [root] = document["policies"]
    assert root["receiver"] and "object_matchers" not in root  # the root matches everything

    def walk(policy: dict) -> None:
        assert set(policy) <= POLICY_KEYS, set(policy) - POLICY_KEYS
        for matcher in policy.get("object_matchers", []):
            assert len(matcher) == 3 and matcher[1] in ("=", "!=", "=~", "!~"), matcher
        for child in policy.get("routes", []):
            walk(child)

    walk(root)
    [selfheal] = [r for r in root["routes"] if r["receiver"] == "selfheal"]
    assert selfheal["continue"] is True
    assert grafana_webhook()[0]["name"] == "selfheal"  # the contact point the policy names


@pytest.mark.parametrize("labels, receivers", ROUTING, ids=["healable", "label-false", "no-label", "own-alert"])
def test_grafana_policy_routes_like_the_alertmanager_example(labels, receivers, tmp_path):
    [root] = load(POLICY)["policies"]
    config = {"route": as_alertmanager_route(root),
              "receivers": [{"name": "oncall"}, {"name": "selfheal"}]}
    (tmp_path / "policy.yml").write_text(yaml.safe_dump(config))
    assert receivers_for(tmp_path / "policy.yml", labels) == receivers


# --- Prometheus --------------------------------------------------------------------------------

def prometheus_copy(tmp_path: Path) -> Path:
    shutil.copy(PROMETHEUS, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / RULES.name)
    return tmp_path / "prometheus.yml"


def test_prometheus_example_and_its_rules_pass_promtool_check_config(tmp_path):
    result = promtool("check", "config", str(prometheus_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert re.search(rf"Checking {re.escape(str(tmp_path / RULES.name))}\n\s+SUCCESS: \d+ rules found", result.stdout)


@pytest.mark.parametrize("breakage, message", [
    ("missing rules", "does not point to an existing file"),
    ("broken rule", "could not parse expression"),
    ("unknown field", "field scrape_intervl not found"),
])
def test_a_broken_prometheus_copy_fails_the_same_check(tmp_path, breakage, message):
    config = prometheus_copy(tmp_path)
    rules = tmp_path / RULES.name
    if breakage == "missing rules":
        rules.unlink()
    elif breakage == "broken rule":
        rules.write_text(rules.read_text().replace('up{job="selfheal-worker"} == 0', 'up{job="selfheal-worker" == 0', 1))
    else:
        config.write_text(config.read_text().replace("scrape_interval:", "scrape_intervl:", 1))
    result = promtool("check", "config", str(config))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_prometheus_scrapes_the_jobs_the_rules_and_dashboard_select_on():
    config = load(PROMETHEUS)
    selected = set(re.findall(r'job=\\?"([^"\\]+)', RULES.read_text() + DASHBOARD.read_text()))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert selected == set(jobs) == {"selfheal-worker", "selfheal-ingress"}
    assert ("GET", jobs["selfheal-ingress"].get("metrics_path", "/metrics")) in ingress_routes()
    assert config["rule_files"] == [RULES.name]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


# --- no secret in any example --------------------------------------------------------------------

def test_no_example_holds_an_inline_secret():
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS and not (isinstance(value, str) and EXPANDER.fullmatch(value)):
                    found.append(f"{where}.{key}")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in EXAMPLES:
        walk(load(path), path.name)
        found += [f"{path.name}: {m.group(0)}" for m in INLINE_TOKEN.finditer(path.read_text())]
    assert not found, f"inline secrets (use a file or a variable): {found}"


# --- end to end: a real Alertmanager running the example -------------------------------------------

class Recorder(LoopbackHTTP):
    """A loopback webhook that records each POST's Authorization header and JSON body."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received: list[dict] = []
        super().__init__()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.server_state.received.append(
                {"path": self.path, "authorization": self.headers.get("Authorization"), "body": json.loads(data)})
            self.send_response(200)
            self.end_headers()

    def statuses(self) -> list[str]:
        return [r["body"]["status"] for r in self.received]


class ExampleAlertmanager(Alertmanager):
    """The harness (port, start, stop by pid, API), running the given config instead of its own."""

    def __init__(self, config: dict) -> None:
        super().__init__("http://unused.invalid/")
        self.config = config
        self.config_text = yaml.safe_dump(config, sort_keys=False)


def runnable_example(selfheal_url: str, token_file: Path, people_url: str) -> dict:
    """The example with loopback addresses, the test's token file, and short timings; the
    routes, matchers, grouping labels and webhook settings are left as they are."""
    config = load(ALERTMANAGER)
    webhook = selfheal_webhook(config)
    webhook["url"] = selfheal_url
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    [oncall] = [r for r in config["receivers"] if r["name"] == "oncall"]
    oncall.clear()
    oncall.update({"name": "oncall", "webhook_configs": [{"url": people_url, "send_resolved": True}]})

    def quick(route: dict) -> None:
        route.update({k: v for k, v in (("group_wait", "0s"), ("group_interval", "1s")) if k in route})
        for child in route.get("routes", []):
            quick(child)

    quick(config["route"])
    return config


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_the_example_delivers_to_the_ingress_with_the_file_token_and_pages_people(client, task_queue, tmp_path):
    token_file = tmp_path / "selfheal-token"
    token_file.write_text(f"am-{uuid.uuid4().hex}\n")  # as an editor leaves it: a trailing newline
    ingress = IngressSettings.from_mapping({"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN_FILE": str(token_file)})
    app = create_app(ingress, Delivery(client, task_queue, search_attributes=True))
    tokens: list[str | None] = []

    @app.middleware("http")
    async def record_token(request, call_next):
        tokens.append(request.headers.get("authorization"))
        return await call_next(request)

    labels = {**HEALABLE, "instance": f"host-{uuid.uuid4().hex[:8]}"}
    async with serving(app) as (base, answered):
        with Recorder("/people") as people:
            am = ExampleAlertmanager(runnable_example(f"{base}/v1/alerts/alertmanager", token_file, people.url))
            with am:
                await asyncio.to_thread(am.post_alerts, [{"labels": labels, "annotations": {"summary": "e2e"}}])
                [fingerprint] = [a["fingerprint"] for a in await asyncio.to_thread(am.alerts)]

                async def delivered():
                    return (answered.count(("/v1/alerts/alertmanager", 202)) >= 1 and people.statuses()
                            and await incidents_for(client, key(f"am-{fingerprint}", "DemoApiDown", "demo-api")))

                [incident_id] = await wait_for(delivered, timeout=15)
                await asyncio.to_thread(am.resolve, labels)

                async def resolved():
                    return answered.count(("/v1/alerts/alertmanager", 202)) >= 2 and "resolved" in people.statuses()

                await wait_for(resolved, timeout=15)
            assert gone(am.pid)
    assert {status for _, status in answered} == {202}
    assert set(tokens) == {"Bearer " + token_file.read_text().strip()}
    assert people.statuses() == ["firing", "resolved"]
    assert incident_id.startswith(f"demo-api.DemoApiDown.am-{fingerprint}~")  # a person reads what it is


def test_alertmanager_reads_the_token_file_for_every_notification(tmp_path):
    # The example's comment says a rotated token needs no reload: show it.
    token_file = tmp_path / "selfheal-token"
    token_file.write_text("first\n")
    with Recorder("/v1/alerts/alertmanager") as selfheal, Recorder("/people") as people:
        am = ExampleAlertmanager(runnable_example(selfheal.url, token_file, people.url))
        with am:
            am.post_alerts([{"labels": HEALABLE}])
            am.wait_until(lambda: selfheal.received, timeout=10)
            token_file.write_text("second\n")
            am.resolve(HEALABLE)
            am.wait_until(lambda: len(selfheal.received) >= 2, timeout=10)
        assert gone(am.pid)
    assert [(r["authorization"], r["body"]["status"]) for r in selfheal.received] == [
        ("Bearer first", "firing"), ("Bearer second", "resolved")]
    assert all(r["body"]["version"] == "4" for r in selfheal.received)
