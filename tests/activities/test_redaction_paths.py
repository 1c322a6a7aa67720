"""Secrets in logs, AWS evidence, alert annotations and notifications are redacted before
they enter an incident's history or leave the machine (selfheal.evidence.redact does the work;
tests/test_redact.py tests the patterns themselves)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from temporalio.testing import ActivityEnvironment

from selfheal.activities.aws_evidence import AwsEvidence
from selfheal.activities.diagnose import DiagnosisRules, RuleDiagnoser
from selfheal.activities.notify import Webhook, activity_of
from selfheal.activities.runner import LocalRunner
from selfheal.ingress.parsers import GenericPayload, from_generic
from selfheal.contract import Alert, DiagnoseInput, Notification
from selfheal.evidence.redact import Pattern, Redactor
from selfheal.whitelist import load_whitelist
from tests.workflows.helpers import NotificationSink

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("AKIAIOSFODNN7EXAMPLE", "S3cr3t-pw", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXZhbHVl", "INV-77812")
LOG = """2026-11-26T10:00:01Z ERROR checkout: upstream 502 from payments (request 8f2c1d)
2026-11-26T10:00:02Z DEBUG botocore: credentials access_key=AKIAIOSFODNN7EXAMPLE region=eu-west-1
2026-11-26T10:00:03Z ERROR sqlalchemy: could not connect to postgresql://checkout:S3cr3t-pw@db.internal:5432/checkout
2026-11-26T10:00:04Z WARN http: GET /cart Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXZhbHVl
2026-11-26T10:00:05Z ERROR billing: invoice INV-77812 failed
"""


def alert(**labels) -> Alert:
    return Alert(labels=labels, starts_at=datetime.now(timezone.utc) - timedelta(seconds=1), fingerprint="f1")


def flat(diagnosis) -> str:
    return json.dumps(diagnosis.model_dump(mode="json"))


async def test_log_evidence_is_redacted_with_the_builtin_and_configured_patterns(tmp_path):
    log = tmp_path / "checkout.log"
    log.write_text(LOG)
    rules = DiagnosisRules.model_validate({"signatures": [
        {"id": "errors", "summary": "s", "match": ['alertname="CheckoutErrorRate"'], "file": str(log), "pattern": "ERROR|DEBUG|WARN",
         "propose": "rollback-checkout"}]})
    redactor = Redactor([Pattern(name="invoice", regex=r"INV-\d+")])
    diagnosis = await ActivityEnvironment().run(RuleDiagnoser(rules, LocalRunner(), None, redactor).diagnose,
                                                DiagnoseInput(incident_id="i", alerts=[alert(alertname="CheckoutErrorRate")], candidates=[]))
    text = flat(diagnosis)
    assert not [s for s in SECRETS if s in text]
    lines = diagnosis.hypotheses[0].evidence[1].lines
    assert "upstream 502 from payments (request 8f2c1d)" in lines[0]  # the rest of the story stays
    assert "postgresql://checkout:[REDACTED:url_password]@db.internal:5432/checkout" in lines[2]
    assert "Bearer [REDACTED:" in lines[3] and "[REDACTED:invoice]" in lines[4]


async def test_aws_evidence_cited_by_a_signature_is_redacted(aws_world):
    logs = aws_world.client("logs")
    group = "/aws/lambda/payments-webhook"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": now - 1000 * (5 - i), "message": line} for i, line in enumerate(LOG.splitlines())])
    loaded = load_whitelist(ROOT / "deploy/demo/whitelist.yaml")
    rules = DiagnosisRules.model_validate({"signatures": [
        {"id": "bad-release", "summary": "s", "match": ['alertname="PaymentsWebhookErrors"'], "propose": "rollback-payments-webhook",
         "aws_evidence": True}]})
    diagnoser = RuleDiagnoser(rules, LocalRunner(), AwsEvidence(aws_world.clients(), loaded))
    diagnosis = await ActivityEnvironment().run(diagnoser.diagnose, DiagnoseInput(
        incident_id="i", alerts=[alert(alertname="PaymentsWebhookErrors")], candidates=[]))
    [cited] = [e for e in diagnosis.hypotheses[0].evidence if e.source == f"aws:logs:{group}"]
    assert len(cited.lines) == 5 and all(line.startswith(f"[log:{group}:s:") for line in cited.lines)
    assert not [s for s in SECRETS[:3] if s in flat(diagnosis)]
    assert "upstream 502 from payments" in cited.lines[0]


def test_alert_annotations_are_redacted_at_the_ingress_labels_are_not():
    payload = GenericPayload.model_validate({"alerts": [{
        "labels": {"alertname": "DbDown", "service": "checkout"},
        "annotations": {"description": "connect failed: postgresql://checkout:S3cr3t-pw@db:5432/x", "runbook": "https://wiki/db"}}]})
    [routed] = from_generic(payload, datetime.now(timezone.utc))
    assert "S3cr3t-pw" not in routed.alert.annotations["description"]
    assert routed.alert.annotations["runbook"] == "https://wiki/db"
    assert routed.alert.labels == {"alertname": "DbDown", "service": "checkout"}


async def test_notifications_are_redacted_before_they_leave(tmp_path):
    with NotificationSink() as sink:
        async with httpx.AsyncClient() as http:
            await ActivityEnvironment().run(activity_of(Webhook(http, sink.url)), Notification(
                incident_id="i", kind="escalation", summary="failed: password=S3cr3t-pw",
                details={"evidence": LOG}))
    [sent] = sink.received
    assert not [s for s in SECRETS[:3] if s in json.dumps(sent)]
    assert sent["summary"] == "failed: password=[REDACTED:password]"


async def test_a_worker_refuses_to_start_with_bad_redaction_patterns(tmp_path):
    import pytest

    from selfheal.settings import WorkerSettings
    from selfheal.worker import run_worker

    bad = tmp_path / "redact.yaml"
    bad.write_text("patterns:\n  - {name: everything, regex: '.*'}\n")
    settings = WorkerSettings(whitelist=str(ROOT / "deploy/demo/whitelist.yaml"), diagnosis=str(ROOT / "deploy/demo/diagnosis.yaml"),
                              redact_patterns=str(bad), address="127.0.0.1:1")
    with pytest.raises(ValueError) as info:
        await run_worker(settings)
    assert str(bad) in str(info.value)
