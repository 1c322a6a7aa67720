"""Evidence by source ref: the reviewed configuration, PromQL templates and their escaping
(against a real Prometheus), journald through the runner (a real systemd --user manager),
rotation-aware file tails, AWS through AwsEvidence (moto: a local simulation), bounds,
redaction, and refusals."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.diagnose import load_rules
from selfheal.activities.evidence_sources import EvidenceSources
from selfheal.activities.log_tail import leading_timestamp, tail_lines
from selfheal.contract import EvidenceRead
from selfheal.activities.runner import LocalRunner
from selfheal.evidence.config import EvidenceConfig
from selfheal.evidence.promql import placeholders, promql_string, render
from selfheal.contract import Alert
from selfheal.whitelist import load_whitelist
from tests.support.prometheus import prometheus  # noqa: F401  (the module-scoped fixture)
from tests.workflows.helpers import LoopbackHTTP

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo"


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def write_config(tmp_path: Path, data: dict | str, name: str = "evidence.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def loaded(tmp_path: Path, **data):
    return EvidenceConfig.load(write_config(tmp_path, data, f"evidence-{uuid.uuid4().hex[:8]}.yaml"))


def alert(**labels: str) -> Alert:
    return Alert(source="test", labels={"alertname": "CheckoutErrorRate", **labels},
                 starts_at=now() - timedelta(minutes=1), fingerprint=uuid.uuid4().hex[:16])


async def refused_with(coro) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await coro
    assert info.value.type == "EvidenceRefused" and info.value.non_retryable
    return info.value


def nbytes(items) -> int:
    return sum(len(i.excerpt.encode()) for i in items)


# --- the configuration ------------------------------------------------------------------

def test_the_demo_configuration_loads_and_names_only_real_entries_and_signatures():
    ev = EvidenceConfig.load(DEMO / "evidence.yaml")
    assert ev.sha256 == hashlib.sha256((DEMO / "evidence.yaml").read_bytes()).hexdigest()
    assert ev.path == str(DEMO / "evidence.yaml")
    known = [e.id for e in load_whitelist(DEMO / "whitelist.yaml").whitelist.entries]
    known += [s.id for s in load_rules(DEMO / "diagnosis.yaml").signatures]
    assert ev.config.unknown_keys(known) == []
    assert ev.config.journals["demo-api"].unit == "selfheal-demo-api.service"
    assert ev.config.allowed(["rollback-checkout"]) == ["aws", "file:checkout-log", "prom:error-rate"]


BASE = {
    "files": {"checkout-log": {"path": "/var/log/checkout/app.log"}},
    "journals": {"demo-api": {"unit": "selfheal-demo-api.service", "scope": "user"}},
    "prometheus": {"url": "http://127.0.0.1:9090", "queries": {"error-rate": {
        "description": "5xx per second by service",
        "query": 'sum(rate(http_requests_total{service=$service, code=~"5.."}[5m]))', "range": "30m", "step": "1m"}}},
    "allow": {"rollback-checkout": ["prom:error-rate", "file:checkout-log", "aws"]},
}


def variant(**changes) -> dict:
    data = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


@pytest.mark.parametrize("data, field, words", [
    (variant(allow={"rollback-checkout": ["prom:error-rate", "prom:nope"]}),
     "allow.rollback-checkout[1]", "unknown source 'prom:nope'"),
    (variant(allow={"x": ["journal:checkout-log"]}), "allow.x[0]", "unknown source 'journal:checkout-log'"),
    (variant(allow={"x": ["/etc/passwd"]}), "allow.x[0]", "unknown source '/etc/passwd'"),
    (variant(files={"Checkout_Log": {"path": "/var/log/a.log"}}), "files.Checkout_Log", "not a valid id"),
    (variant(files={"-x": {"path": "/var/log/a.log"}}), "files.-x", "not a valid id"),
    (variant(files={"a": {"path": "var/log/app.log"}}), "files.a.path", "absolute"),
    (variant(files={"a": {"path": "/var/log/../../etc/shadow"}}), "files.a.path", "'..'"),
    (variant(bounds={"window": "25h"}), "bounds.window", "at most 24h"),
    (variant(bounds={"window": "0s"}), "bounds.window", "longer than 0s"),
    (variant(bounds={"max_bytes": 65537}), "bounds.max_bytes", "65536"),
    (variant(bounds={"max_lines": 2001}), "bounds.max_lines", "2000"),
    (variant(journals={"j": {"unit": "--since=x"}}), "journals.j.unit", "not a systemd unit name"),
    (variant(prometheus__url="file:///etc/passwd"), "prometheus.url", "http(s)"),
    (variant(prometheus__url="http://user:pw@prom:9090"), "prometheus.url", "credentials"),
    (variant(prometheus__queries={"q": {"description": "d", "query": 'up{job=~$job}'}}),
     "prometheus.queries.q.query", "regular expression"),
    (variant(prometheus__queries={"q": {"description": "d", "query": 'up{job="x}'}}),
     "prometheus.queries.q.query", "unterminated string"),
    (variant(prometheus__queries={"q": {"description": "d", "query": 'up{job=$}'}}),
     "prometheus.queries.q.query", "not followed by a label name"),
    (variant(prometheus__queries={"q": {"description": "d", "query": "up", "range": "1h", "step": "1s"}}),
     "prometheus.queries.q", "3600 points"),
    (variant(prometheus__queries={"q": {"query": "up"}}), "prometheus.queries.q.description", "required"),
    (variant(extra={"x": 1}), "extra", "unknown key"),
])
def test_configuration_problems_name_the_file_and_the_field(tmp_path, data, field, words):
    path = write_config(tmp_path, data)
    with pytest.raises(ValueError) as info:
        EvidenceConfig.load(path)
    text = str(info.value)
    assert str(path) in text and f": {field}: " in text and words in text, text


def test_duplicate_keys_and_unreadable_files_are_refused(tmp_path):
    path = write_config(tmp_path, "files:\n  a: {path: /var/log/a}\n  a: {path: /var/log/b}\n")
    with pytest.raises(ValueError, match=r"evidence.yaml:3: files.a: key given twice"):
        EvidenceConfig.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        EvidenceConfig.load(tmp_path / "missing.yaml")


def test_allowed_is_the_sorted_union_and_the_catalog_shows_no_path_url_unit_or_query(tmp_path):
    ev = loaded(tmp_path, **variant(allow={
        "rollback-checkout": ["prom:error-rate", "file:checkout-log", "aws"],
        "checkout-bad-deploy": ["file:checkout-log", "journal:demo-api"],
    }))
    cfg = ev.config
    refs = cfg.allowed(["rollback-checkout", "checkout-bad-deploy", "not-configured"])
    assert refs == ["aws", "file:checkout-log", "journal:demo-api", "prom:error-rate"]
    assert cfg.allowed([]) == [] and cfg.allowed(["nothing"]) == []

    catalog = cfg.catalog(refs)
    assert [c["ref"] for c in catalog] == refs
    assert [c["kind"] for c in catalog] == ["aws", "file", "journal", "prometheus"]
    prom = catalog[-1]
    assert prom["description"] == "5xx per second by service" and prom["labels"] == ["service"]
    assert "30m" in prom["reads"] and "1m" in prom["reads"]
    shown = json.dumps(catalog)
    for secret in ("/var/log", "app.log", "127.0.0.1", "9090", "http", "selfheal-demo-api", "rate(",
                   "http_requests_total", "localhost", "user"):
        assert secret not in shown, secret
    with pytest.raises(ValueError, match="unknown evidence source 'file:nope'"):
        cfg.catalog(["file:nope"])


# --- PromQL templates -------------------------------------------------------------------

@pytest.mark.parametrize("value, literal", [
    ("checkout", '"checkout"'),
    ("", '""'),
    ('a"b', r'"a\"b"'),
    ("a\\b", r'"a\\b"'),
    ("a\\", r'"a\\"'),
    ('\\"', r'"\\\""'),
    ("line\nbreak", r'"line\nbreak"'),
    ("cr\rtab\t", r'"cr\rtab\t"'),
    ("bell\x07del\x7f", r'"bell\x07del\x7f"'),
    ("x}[5m])) or vector(1)", '"x}[5m])) or vector(1)"'),
    ("$service", '"$service"'),
    ("it's `raw`", '"it\'s `raw`"'),
    ("ü€😀", '"ü€😀"'),
    ("repl\ufffd", r'"repl\ufffd"'),
])
def test_promql_string_escapes(value, literal):
    assert promql_string(value) == literal


@pytest.mark.parametrize("value, words", [
    ("x" * 1025, "1025 characters"),
    ("a\x00b", "NUL"),
    ("\ud800", "not valid Unicode"),
])
def test_promql_string_refuses(value, words):
    with pytest.raises(ValueError, match=words):
        promql_string(value)
    assert promql_string("x" * 1024) == '"' + "x" * 1024 + '"'


def test_render_replaces_placeholders_outside_strings_and_comments_only():
    template = 'up{a=$a, b="$a", c=\'$b\', d=`$b`, e=$a_b} # $nothing\n+ on() $b'
    assert placeholders(template) == ["a", "a_b", "b"]
    assert render(template, {"a": 'x"', "a_b": "y", "b": "z"}) == \
        'up{a="x\\"", b="$a", c=\'$b\', d=`$b`, e="y"} # $nothing\n+ on() "z"'
    with pytest.raises(ValueError, match="no label 'a_b'"):
        render(template, {"a": "x", "b": "z"})
    with pytest.raises(ValueError, match="label 'a': label value contains NUL"):
        render(template, {"a": "\x00", "a_b": "y", "b": "z"})


# --- Prometheus (real) --------------------------------------------------------------------

WEIRD = ['we"ird\\ }value', "a\nb\tc", "ctl\x01\x1fz", "ü€😀", "repl\ufffdx", "q'uote`b", 'x"} or vector(1) #\\']
INJECTION = 'nope"}[5m])) or vector(1) or sum(rate(x{a="'


@pytest.fixture(scope="module")
def metrics(prometheus):  # noqa: F811
    prom, target = prometheus
    target.grow("http_requests_total", {"service": "checkout", "code": "500"}, per_second=2.0)
    target.set("http_requests_total", {"service": "checkout", "code": "200"}, 1000)
    target.set("http_requests_total", {"service": "search", "code": "500"}, 7)
    for i, value in enumerate(WEIRD):
        target.set("weird_total", {"service": value}, i + 1)
    # irate needs two samples of the growing counter; weird_total all its series.
    prom.wait_for_query('count_over_time(http_requests_total{service="checkout", code="500"}[1m]) >= 4')
    prom.wait_for_query("weird_total", series=len(WEIRD))
    return prom, target


def prom_sources(tmp_path, prom, http, bounds=None, **queries):
    data = {"prometheus": {"url": prom.url, "queries": queries}}
    if bounds:
        data["bounds"] = bounds
    return EvidenceSources(loaded(tmp_path, **data), LocalRunner(), http)


async def test_instant_queries_return_the_expected_series_and_values(tmp_path, metrics):
    prom, _ = metrics
    async with httpx.AsyncClient() as http:
        sources = prom_sources(
            tmp_path, prom, http,
            errors={"description": "5xx per second", "query": 'sum(irate(http_requests_total{service=$service, code=~"5.."}[1m]))'},
            by_code={"description": "requests by code", "query": "sum by (code) (http_requests_total{service=$service})"},
            demo={"description": "the demo's template", "query": 'sum(rate(http_requests_total{service=$service, code=~"5.."}[5m]))'},
        )
        t = now()
        errors = await sources.read("prom:errors", None, [alert(service="checkout")], t - timedelta(minutes=5), t)
        by_code = await sources.read("prom:by_code", None, [alert(service="checkout")], t - timedelta(minutes=5), t)
        demo = await sources.read("prom:demo", None, [alert(service="checkout")], t - timedelta(minutes=5), t)
        search = await sources.read("prom:by_code", None, [alert(service="search")], t - timedelta(minutes=5), t)

    (item,) = errors
    assert item.source == "prom:errors" and item.id.startswith("prom:errors:") and len(item.id) == len("prom:errors:") + 12
    value = float(item.excerpt.split(" = ")[1].split(" at ")[0])
    assert 1.6 <= value <= 2.4, item.excerpt  # irate of a counter growing 2/s
    assert item.excerpt.startswith("{} = ") and abs((item.timestamp - t).total_seconds()) < 0.01
    assert 'service="checkout"' in item.query and "prometheus query " in item.query

    assert sorted(i.excerpt.split(" = ")[0] for i in by_code) == ['{code="200"}', '{code="500"}']
    assert next(i for i in by_code if '"200"' in i.excerpt).excerpt.startswith('{code="200"} = 1000 at ')
    assert len({i.id for i in by_code}) == 2
    (d,) = demo
    assert float(d.excerpt.split(" = ")[1].split(" at ")[0]) > 0
    assert [i.excerpt.split(" at ")[0] for i in search] == ['{code="500"} = 7']


async def test_range_queries_return_every_point_of_the_window(tmp_path, metrics):
    prom, _ = metrics
    async with httpx.AsyncClient() as http:
        sources = prom_sources(
            tmp_path, prom, http,
            static={"description": "2xx count", "query": 'http_requests_total{service=$service, code="200"}',
                    "range": "2s", "step": "1s"},
            by_code={"description": "by code", "query": "sum by (code) (http_requests_total{service=$service})",
                     "range": "2h", "step": "10m"},
        )
        t = now()
        static = await sources.read("prom:static", None, [alert(service="checkout")], t - timedelta(minutes=5), t)
        wide = await sources.read("prom:by_code", None, [alert(service="checkout")], t - timedelta(hours=5), t)
    (s,) = static
    assert s.excerpt.startswith('http_requests_total{code="200", instance=')
    assert 'service="checkout"}: last 1000 at ' in s.excerpt
    assert "min 1000, max 1000, 3 points from " in s.excerpt and s.excerpt.endswith("values oldest first: 1000 1000 1000")
    assert "query_range" in s.query and "step 1s" in s.query
    # A 2h range is cut to the bounds' window (1h by default): the query says so.
    assert len(wide) == 2 and f"from {iso(t - timedelta(hours=1))}" in wide[0].query


async def test_escaped_label_values_select_exactly_their_own_series(tmp_path, metrics):
    prom, _ = metrics
    async with httpx.AsyncClient() as http:
        sources = prom_sources(tmp_path, prom, http, weird={"description": "d", "query": "sum(weird_total{service=$service})"})
        t = now()
        for i, value in enumerate(WEIRD):
            (item,) = await sources.read("prom:weird", None, [alert(service=value)], t - timedelta(minutes=1), t)
            assert item.excerpt.startswith(f"{{}} = {i + 1} at "), (value, item.excerpt)


async def test_an_injection_in_a_label_value_stays_a_string_literal(tmp_path, metrics):
    prom, _ = metrics
    template = 'sum(rate(http_requests_total{service=$service, code=~"5.."}[5m]))'
    # Quoting by hand would let the alert rewrite the query: Prometheus answers vector(1).
    naive = template.replace("$service", f'"{INJECTION}"')
    assert [r["value"][1] for r in prom.query(naive)["result"]] == ["1"]
    async with httpx.AsyncClient() as http:
        sources = prom_sources(tmp_path, prom, http, errors={"description": "d", "query": template},
                               weird={"description": "d", "query": "weird_total{service=$service}"})
        t = now()
        for value in (INJECTION, 'checkout"} or vector(1) #', 'checkout\\"} or vector(1)', "checkout} or vector(1)"):
            assert await sources.read("prom:errors", None, [alert(service=value)], t - timedelta(minutes=1), t) == []
        # The same characters in a real series' value: selected as a string, exactly.
        (item,) = await sources.read("prom:weird", None, [alert(service=WEIRD[-1])], t - timedelta(minutes=1), t)
        assert "= 7 at" in item.excerpt and "vector(1)" in item.excerpt  # its label, redacted and quoted


async def test_a_query_prometheus_refuses_is_an_item_and_a_missing_label_is_refused(tmp_path, metrics):
    prom, _ = metrics
    async with httpx.AsyncClient() as http:
        sources = prom_sources(tmp_path, prom, http, broken={"description": "d", "query": "sum(up{job=$job}"},
                               errors={"description": "d", "query": "up{job=$job}"})
        t = now()
        (item,) = await sources.read("prom:broken", None, [alert(job="app")], t - timedelta(minutes=1), t)
        assert item.id == "prom:broken:error" and "bad_data" in item.excerpt and "HTTP 400" in item.excerpt
        error = await refused_with(sources.read("prom:errors", None, [alert(service="x")], t - timedelta(minutes=1), t))
        assert "no label 'job'" in str(error)
        # The first FIRING alert's labels are used.
        resolved = alert(job="nope").model_copy(update={"status": "resolved"})
        (up,) = await sources.read("prom:errors", None, [resolved, alert(job="app")], t - timedelta(minutes=1), t)
        assert 'job="app"' in up.excerpt


async def test_series_are_bounded_by_max_lines_and_max_bytes(tmp_path, metrics):
    prom, _ = metrics
    async with httpx.AsyncClient() as http:
        query = {"description": "d", "query": "weird_total"}
        t = now()
        two = await prom_sources(tmp_path, prom, http, {"max_lines": 2}, all=query).read("prom:all", None, [], t, t)
        small = await prom_sources(tmp_path, prom, http, {"max_bytes": 100}, all=query).read("prom:all", None, [], t, t)
    assert len(two) == 2 and two[-1].truncated and not two[0].truncated
    assert nbytes(small) <= 100 and small[-1].truncated


class FakePrometheus(LoopbackHTTP):
    """Answers every request with ``status``/``body``/``headers``; records the paths."""

    def __init__(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.status, self.body, self.headers, self.paths = status, body, headers or {}, []
        super().__init__()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            s = self.server_state
            s.paths.append(self.path)
            self.send_response(s.status)
            for k, v in s.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(s.body)))
            self.end_headers()
            self.wfile.write(s.body)


async def test_prometheus_5xx_and_connection_problems_are_retryable_and_redirects_are_not_followed(tmp_path):
    query = {"up": {"description": "d", "query": "up"}}
    t = now()
    async with httpx.AsyncClient() as http:
        with FakePrometheus(503, b'{"status":"error","errorType":"timeout","error":"query timed out"}') as fake:
            sources = EvidenceSources(loaded(tmp_path, prometheus={"url": fake.url.removesuffix("/"), "queries": query}),
                                      LocalRunner(), http)
            with pytest.raises(ApplicationError) as info:
                await sources.read("prom:up", None, [], t, t)
            assert info.value.type == "PrometheusUnavailable" and not info.value.non_retryable
            assert "timed out" in str(info.value)
        with FakePrometheus(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}) as fake:
            sources = EvidenceSources(loaded(tmp_path, prometheus={"url": fake.url.removesuffix("/"), "queries": query}),
                                      LocalRunner(), http)
            (item,) = await sources.read("prom:up", None, [], t, t)
            assert item.id == "prom:up:error" and "redirect" in item.excerpt and "not followed" in item.excerpt
            assert len(fake.paths) == 1 and fake.paths[0].startswith("/api/v1/query?")
        with FakePrometheus(200, b"<html>not prometheus</html>") as fake:
            sources = EvidenceSources(loaded(tmp_path, prometheus={"url": fake.url.removesuffix("/"), "queries": query}),
                                      LocalRunner(), http)
            (item,) = await sources.read("prom:up", None, [], t, t)
            assert "without a JSON body" in item.excerpt
        closed = FakePrometheus(200)  # never entered: nothing listens on its port once closed
        url = closed.url.removesuffix("/")
        closed._server.server_close()
        sources = EvidenceSources(loaded(tmp_path, prometheus={"url": url, "queries": query}), LocalRunner(), http)
        with pytest.raises(ApplicationError) as info:
            await sources.read("prom:up", None, [], t, t)
        assert info.value.type == "PrometheusUnavailable" and not info.value.non_retryable


# --- journald (a real systemd --user manager) -----------------------------------------------

JOURNAL_LINES = [
    "checkout-api 1.4.2 starting on :8080 (workers=4)",
    "WARN db pool 9/10 connections in use, waiting 250ms",
    "ERROR POST https://api.stripe.com/v1/charges failed: 502; Authorization: Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "ERROR connect postgres://shop:Corr3ct-H0rse-Battery@db.internal:5432/shop: too many connections",
    "INFO retrying with DB_PASSWORD=hunter2hunter2 from the environment",
]


async def test_journal_lines_come_through_the_runner_redacted_and_bounded(tmp_path, systemd_user, runner):
    sd = systemd_user
    unit = f"evidence-{uuid.uuid4().hex[:8]}.service"
    script = "; ".join(f'echo "{line}"' for line in JOURNAL_LINES) + "; exec sleep 600"
    assert "%" not in script and "$" not in script  # systemd would expand them
    sd.install_unit(unit, sd.simple_service(script))
    try:
        sd.wait_until(lambda: sd.journal_entries(unit, grep="from the environment"), timeout=15)
        journals = {"api": {"unit": unit, "scope": "user", "host": "localhost"}}
        t = now()
        items = await EvidenceSources(loaded(tmp_path, journals=journals), runner, None).read(
            "journal:api", None, [], t - timedelta(days=2), t)
        two = await EvidenceSources(loaded(tmp_path, journals=journals, bounds={"max_lines": 2}), runner, None).read(
            "journal:api", None, [], t - timedelta(hours=1), t)
        # A window that ended before the unit started holds nothing.
        empty = await EvidenceSources(loaded(tmp_path, journals=journals), runner, None).read(
            "journal:api", None, [], t - timedelta(hours=2), t - timedelta(minutes=30))
    finally:
        sd.systemctl("stop", unit, check=False)
        (sd.unit_dir / unit).unlink(missing_ok=True)

    texts = [i.excerpt for i in items]
    # The manager's own message about the unit ("Started evidence-....service ...") is there
    # once; journald does not order it against the unit's own output (under load it came
    # after the first lines), so the unit's lines are compared among themselves.
    started = [text for text in texts if text.startswith(f"Started {unit}")]
    assert len(started) == 1 and len(items) == 1 + len(JOURNAL_LINES), texts
    texts = [text for text in texts if text not in started]
    assert texts[0] == JOURNAL_LINES[0] and texts[1] == JOURNAL_LINES[1]
    assert {i.source for i in items} == {"journal:api"} and not any(i.truncated for i in items)
    # Ids hash the journal cursor: the same entry has the same id in every read.
    assert len({i.id for i in items}) == len(items) and all(len(i.id) == len("journal:api:") + 12 for i in items)
    assert all(t - timedelta(minutes=5) < i.timestamp <= t for i in items)
    joined = "\n".join(texts)
    for secret in ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "Corr3ct-H0rse-Battery", "hunter2hunter2"):
        assert secret not in joined
    assert "Authorization: Bearer [REDACTED:" in texts[2] and "postgres://shop:[REDACTED:url_password]@db.internal" in texts[3]
    assert "DB_PASSWORD=[REDACTED:password]" in texts[4]
    # The window is cut to its last hour whatever the caller asks: the query says so.
    assert f"from {iso(t - timedelta(hours=1))}" in items[0].query and f"--user unit {unit}" in items[0].query
    # Bounded: the most recent lines are kept, the same entries under the same ids.
    assert [i.excerpt for i in two] == [i.excerpt for i in items[-2:]] and two[-1].truncated and not two[0].truncated
    assert [i.id for i in two] == [i.id for i in items[-2:]]
    assert empty == []


# --- files ----------------------------------------------------------------------------------

def test_leading_timestamps():
    assert leading_timestamp("2026-11-26T10:00:00Z x") == datetime(2026, 11, 26, 10, tzinfo=timezone.utc)
    assert leading_timestamp("[2026-11-26 10:00:00,123+0100] x") == datetime(2026, 11, 26, 9, 0, 0, 123000, timezone.utc)
    assert leading_timestamp("2026-11-26T10:00:00.123456789+02:00 x") == datetime(2026, 11, 26, 8, 0, 0, 123456, timezone.utc)
    assert leading_timestamp("2026-11-26T10:00:00 x") == datetime(2026, 11, 26, 10).astimezone(timezone.utc)  # local
    assert leading_timestamp("  at com.example.Foo(Foo.java:42)") is None
    assert leading_timestamp("2026-13-40T10:00:00Z") is None


def files_config(tmp_path: Path, path: Path, host: str = "localhost", **bounds):
    data = {"files": {"app": {"path": str(path), "host": host}}}
    if bounds:
        data["bounds"] = bounds
    return loaded(tmp_path, **data)


async def test_the_tail_continues_into_the_rotated_file_and_keeps_the_window(tmp_path):
    t = now().replace(microsecond=0)
    log = tmp_path / "app.log"
    (tmp_path / "app.log.1").write_text("\n".join([
        f"{iso(t - timedelta(hours=3))} INFO long before the window",
        "  continuation of a line before the window",
        f"{iso(t - timedelta(minutes=50))} INFO deploy checkout:42 started",
        f"{iso(t - timedelta(minutes=40))} WARN slow request 2300ms",
    ]) + "\n")
    log.write_text("\n".join([
        f"{iso(t - timedelta(minutes=30))} ERROR payment failed: token=abcdef0123456789abcdef",
        "Traceback (most recent call last):",
        f"{iso(t - timedelta(minutes=5))} ERROR 5xx rate 12%",
        f"{iso(t + timedelta(hours=1))} INFO a clock in the future",
        "  its continuation",
    ]))  # no final newline: the last line is still being written
    sources = EvidenceSources(files_config(tmp_path, log), LocalRunner(), None)
    items = await sources.read("file:app", None, [], t - timedelta(days=3), t)
    assert [i.excerpt.split(" ", 1)[-1] for i in items] == [
        "INFO deploy checkout:42 started", "WARN slow request 2300ms",
        "ERROR payment failed: token=[REDACTED:secret]", "(most recent call last):", "ERROR 5xx rate 12%"]
    assert [i.timestamp for i in items] == [t - timedelta(minutes=50), t - timedelta(minutes=40),
                                            t - timedelta(minutes=30), None, t - timedelta(minutes=5)]
    assert len({i.id for i in items}) == 5 and all(i.id.startswith("file:app:") for i in items)
    assert not any(i.truncated for i in items)  # a line older than the window was seen: nothing missed
    assert f"from {iso(t - timedelta(hours=1))} to {iso(t)}" in items[0].query and str(log) in items[0].query


async def test_a_long_file_is_not_continued_and_an_unseen_start_is_truncated(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(300)))
    (tmp_path / "app.log.1").write_text("older\n")
    t = now()
    items = await EvidenceSources(files_config(tmp_path, log), LocalRunner(), None).read("file:app", None, [], t, t)
    assert [i.excerpt for i in items] == [f"line {i}" for i in range(100, 300)]
    assert items[-1].truncated and not any(i.truncated for i in items[:-1])
    assert tail_lines(log, 3) == ([b"line 297", b"line 298", b"line 299"], True)
    assert tail_lines(log, 1000)[1] is False and len(tail_lines(log, 1000)[0]) == 300


async def test_a_50_mb_log_is_tailed_in_well_under_a_second(tmp_path):
    log = tmp_path / "big.log"
    t = now().replace(microsecond=0)
    line = f"{iso(t - timedelta(minutes=1))} INFO GET /api/cart 200 12ms " + "x" * 60 + "\n"
    block = line.encode() * 10_000
    with log.open("wb") as handle:
        while handle.tell() < 50 * 1024 * 1024:
            handle.write(block)
        handle.write(f"{iso(t)} ERROR the last line\n".encode())
    assert log.stat().st_size >= 50 * 1024 * 1024
    sources = EvidenceSources(files_config(tmp_path, log, max_lines=2000, max_bytes=65536), LocalRunner(), None)
    began = time.monotonic()
    items = await sources.read("file:app", None, [], t - timedelta(hours=1), t)
    elapsed = time.monotonic() - began
    assert elapsed < 1.0, elapsed
    # The byte budget runs out first: the oldest line kept is cut to what was left of it.
    assert items[-1].excerpt.endswith("ERROR the last line") and nbytes(items) == 65536 and items[-1].truncated
    assert len(items) < 2000 and len(items[0].excerpt) < len(line) - 1 and line.startswith(items[0].excerpt)


async def test_max_bytes_and_max_lines_keep_the_most_recent_lines(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:04d} " + "y" * 95 + "\n" for i in range(50)))  # 100 bytes a line
    t = now()
    by_bytes = await EvidenceSources(files_config(tmp_path, log, max_bytes=1050), LocalRunner(), None).read(
        "file:app", None, [], t, t)
    assert nbytes(by_bytes) == 1050 and len(by_bytes) == 11 and by_bytes[-1].truncated
    assert by_bytes[0].excerpt == "0039 " + "y" * 45  # the oldest kept line, cut to what was left
    assert by_bytes[-1].excerpt.startswith("0049 ")
    by_lines = await EvidenceSources(files_config(tmp_path, log, max_lines=3), LocalRunner(), None).read(
        "file:app", None, [], t, t)
    assert [i.excerpt[:4] for i in by_lines] == ["0047", "0048", "0049"] and by_lines[-1].truncated
    long = tmp_path / "long.log"
    long.write_text("z" * 5000 + "\n")
    (item,) = await EvidenceSources(files_config(tmp_path, long), LocalRunner(), None).read("file:app", None, [], t, t)
    assert len(item.excerpt) == 1000 and item.excerpt.endswith("…")


async def test_a_key_block_across_lines_is_redacted(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("loading key\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nqzE3b8=\n"
                   "-----END RSA PRIVATE KEY-----\nkey loaded\n")
    t = now()
    items = await EvidenceSources(files_config(tmp_path, log), LocalRunner(), None).read("file:app", None, [], t, t)
    text = "\n".join(i.excerpt for i in items)
    assert "MIIEowIBAAKCAQEA7" not in text and "qzE3b8=" not in text and "[REDACTED:private_key]" in text
    assert items[0].excerpt == "loading key" and items[-1].excerpt == "key loaded"


async def test_a_missing_file_is_one_item_saying_so(tmp_path):
    t = now()
    (item,) = await EvidenceSources(files_config(tmp_path, tmp_path / "nope.log"), LocalRunner(), None).read(
        "file:app", None, [], t, t)
    assert item.id == "file:app:unavailable" and "does not exist" in item.excerpt
    (tmp_path / "only.log.1").write_text("rotated away\n")
    (item,) = await EvidenceSources(files_config(tmp_path, tmp_path / "only.log"), LocalRunner(), None).read(
        "file:app", None, [], t, t)
    assert item.excerpt == "rotated away"


class RecordingRunner(LocalRunner):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.argvs = []

    async def run(self, host, argv, timeout=60.0, privileged=False):
        self.argvs.append((host, list(argv)))
        return await super().run(host, argv, timeout, privileged)


async def test_a_file_on_another_host_is_tailed_through_the_runner(tmp_path):
    t = now().replace(microsecond=0)
    log = tmp_path / "app.log"
    (tmp_path / "app.log.1").write_text("".join(f"{iso(t - timedelta(minutes=30 - i))} old {i}\n" for i in range(5)))
    log.write_text("".join(f"{iso(t - timedelta(minutes=10 - i))} new {i} password=s3cr3t-{i}\n" for i in range(3)))
    runner = RecordingRunner(local_hosts=["web-1"])  # "web-1" runs here: a stand-in for SSH
    remote = await EvidenceSources(files_config(tmp_path, log, host="web-1", max_lines=6), runner, None).read(
        "file:app", None, [], t - timedelta(hours=1), t)
    local = await EvidenceSources(files_config(tmp_path, log, max_lines=6), LocalRunner(), None).read(
        "file:app", None, [], t - timedelta(hours=1), t)
    assert runner.argvs == [("web-1", ["tail", "-n", "7", "--", str(log)]),
                            ("web-1", ["tail", "-n", "4", "--", f"{log}.1"])]
    assert [i.excerpt for i in remote] == [i.excerpt for i in local]
    assert [i.excerpt.split(" ", 1)[1] for i in remote] == [
        "old 2", "old 3", "old 4", "new 0 password=[REDACTED:password]", "new 1 password=[REDACTED:password]",
        "new 2 password=[REDACTED:password]"]
    assert remote[-1].truncated and local[-1].truncated  # app.log.1 held more than was read
    missing = await EvidenceSources(files_config(tmp_path, tmp_path / "gone.log", host="web-1"), runner, None).read(
        "file:app", None, [], t, t)
    assert "does not exist" in missing[0].excerpt
    with pytest.raises(ApplicationError) as info:
        await EvidenceSources(files_config(tmp_path, log, host="db-9"), runner, None).read("file:app", None, [], t, t)
    assert info.value.type == "UnreachableHost" and info.value.non_retryable


# --- refusals, AWS and the activity -----------------------------------------------------------

async def test_an_unconfigured_ref_is_refused_naming_the_configured_ones(tmp_path):
    ev = loaded(tmp_path, **BASE)
    sources = EvidenceSources(ev, LocalRunner(), None)
    t = now()
    for ref in ("file:nope", "file:/etc/passwd", "/etc/passwd", "prom:up", "journal:checkout-log", "AWS", "", "file:"):
        error = await refused_with(sources.read(ref, None, [], t, t))
        assert "aws, file:checkout-log, journal:demo-api, prom:error-rate" in str(error)
    no_prom = EvidenceSources(loaded(tmp_path, files={"a": {"path": "/x"}}), LocalRunner(), None)
    await refused_with(no_prom.read("prom:error-rate", None, [], t, t))
    error = await refused_with(sources.read("file:checkout-log", None, [], t, t - timedelta(seconds=1)))
    assert "after it ends" in str(error)


async def test_aws_reads_the_allowed_entry_through_aws_evidence(tmp_path, aws_world):
    from selfheal.activities.aws_evidence import AwsEvidence

    t = now().replace(microsecond=0)
    logs = aws_world.client("logs")
    group, stream = "/aws/lambda/payments-webhook", "2026/11/26/[3]abc"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": int((t - timedelta(hours=3)).timestamp() * 1000), "message": "before the window"}] + [
        {"timestamp": int((t - timedelta(minutes=50 - i)).timestamp() * 1000),
         "message": f"[ERROR] req-{i} stripe call failed api_key=sk_live_abcdefghijklmnopqrstuv{i:02d}"} for i in range(50)])
    aws_world.start_recording()
    aws = AwsEvidence(aws_world.clients(), load_whitelist(DEMO / "whitelist.yaml"))
    ev = loaded(tmp_path, bounds={"max_lines": 20}, allow={
        "rollback-payments-webhook": ["aws"], "rollback-checkout": ["aws"], "restart-demo-api": []})
    sources = EvidenceSources(ev, LocalRunner(), None, aws=aws)
    items = await sources.read("aws", "rollback-payments-webhook", [alert()], t - timedelta(days=1), t)
    assert len(items) == 20 and items[-1].truncated and {i.source for i in items} == {f"logs:{group}"}
    assert "sk_live_" not in "".join(i.excerpt for i in items) and "[REDACTED:" in items[0].excerpt
    # The most recent 20 of the window's events (which is cut to its last hour).
    assert items[0].excerpt.startswith("[ERROR] req-30 ") and items[-1].excerpt.startswith("[ERROR] req-49 ")
    assert f"from {(t - timedelta(hours=1)).isoformat()}" in items[0].query
    checkout = await sources.read("aws", "rollback-checkout", [alert(alarmname="CheckoutErrorRate")], t - timedelta(hours=1), t)
    assert [i.source for i in checkout] == ["ecs:demo/checkout", "alarm:CheckoutErrorRate"]  # moto: no alarm history
    assert [c for c in aws_world.writes() if c != "FilterLogEvents"] == []  # FilterLogEvents reads
    for entry in ("restart-demo-api", "scale-queue-workers", None):
        await refused_with(sources.read("aws", entry, [alert()], t, t))
    await refused_with(EvidenceSources(ev, LocalRunner(), None).read("aws", "rollback-checkout", [alert()], t, t))


async def test_the_activity_reads_heartbeating(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    sources = EvidenceSources(files_config(tmp_path, log), LocalRunner(), None)
    t = now()
    items = await ActivityEnvironment().run(sources.read_evidence, EvidenceRead(
        ref="file:app", entry_id=None, alerts=[alert()], since=t - timedelta(minutes=1), until=t))
    assert [i.excerpt for i in items] == ["one", "two"]
    assert sources.activities() == [sources.read_evidence]
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(sources.read_evidence, EvidenceRead(ref="file:other", alerts=[], since=t, until=t))
    assert info.value.type == "EvidenceRefused"
