"""The demo environment as shipped: demo whitelist, demo diagnosis rules, the demo API unit."""

import asyncio
from pathlib import Path

import httpx

from selfheal.contract import AuditRecord
from selfheal.settings import WorkerSettings
from tests.workflows.helpers import FAST, alert, running_worker, start_incident

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo"
UNIT = "selfheal-demo-api.service"


async def healthz() -> int:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get("http://127.0.0.1:8081/healthz", timeout=2)).status_code
    except httpx.HTTPError:
        return 0


async def test_demo_api_leak_is_diagnosed_from_its_journal_restarted_and_verified(client, task_queue, systemd_user, runner):
    sd = systemd_user
    # The unit template exactly as the README installs it, with a leak that shows up in seconds.
    text = (DEMO / f"{UNIT}.in").read_text().replace("@ROOT@", str(ROOT))
    text = text.replace("SELFHEAL_DEMO_LEAK_AFTER=300", "SELFHEAL_DEMO_LEAK_AFTER=5")
    sd.install_unit(UNIT, text)
    try:
        sd.wait_until(lambda: sd.journal_entries(UNIT, grep="connection pool exhausted"), timeout=30)
        assert await healthz() == 503
        before = sd.show(UNIT, "InvocationID")["InvocationID"]

        settings = WorkerSettings(task_queue=task_queue, whitelist=str(DEMO / "whitelist.yaml"),
                                  diagnosis=str(DEMO / "diagnosis.yaml"), incident=FAST)
        async with running_worker(client, settings, runner):
            handle = await start_incident(client, task_queue, alert("DemoApiErrors", service="demo-api", instance="localhost"))
            record: AuditRecord = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        sd.systemctl("stop", UNIT, check=False)
        (sd.unit_dir / UNIT).unlink(missing_ok=True)

    assert record.outcome == "remediated", record.outcome_detail
    assert record.diagnosis.proposal == "restart-demo-api"
    assert record.diagnosis.hypotheses[0].id == "demo-api-pool-exhausted"
    evidence = [line for ev in record.diagnosis.hypotheses[0].evidence for line in ev.lines]
    assert any("connection pool exhausted" in line for line in evidence)
    assert record.decision.kind == "auto" and record.decision.tier == "instance"
    assert record.remediation.before.invocation_id == before != record.remediation.after.invocation_id
    assert {c.name: c.ok for c in record.verification.checks} == {
        f"unit {UNIT} active": True, "GET http://127.0.0.1:8081/healthz": True,
    }
