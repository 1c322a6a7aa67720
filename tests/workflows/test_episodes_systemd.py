"""Re-sends after an incident acted never act again: real ingress, Temporal and systemd.

The case that mattered most: after ``verification_failed``, Alertmanager keeps re-sending
the still-firing alert. Each re-send used to start an incident that ran the same
automatic action again, autonomy chained through the back door. Now a re-send belongs to
the episode whose incident already ended, and starts nothing; and the alert's next
episode, past the cooldown, asks people (the governor's failure memory).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx

from selfheal.ingress.app import create_app
from selfheal.ingress.auth import SourceAuth
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from selfheal.contract import Approval, AuditRecord
from selfheal.workflows.incident import IncidentWorkflow
from tests.ingress.payloads import incidents_for
from tests.workflows.helpers import ended, running_worker, settings_for, wait_status

TOKEN = "episode-token"


def generic_body(starts_at: datetime, status: str = "firing") -> bytes:
    alert = {"labels": {"alertname": "ApiDown", "service": "api"}, "fingerprint": "api-down",
             "status": status, "starts_at": starts_at.isoformat()}
    return json.dumps({"alerts": [alert]}).encode()


async def post(http: httpx.AsyncClient, data: bytes) -> dict:
    response = await http.post("/v1/alerts/generic", content=data,
                               headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    [incident] = response.json()["incidents"]
    return incident


def app(client, task_queue) -> httpx.AsyncClient:
    settings = IngressSettings(sources={"generic": SourceAuth(token=TOKEN)})
    asgi = create_app(settings, Delivery(client, task_queue, search_attributes=True))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://ingress.test")


async def test_resends_after_remediation_or_failed_verification_never_act_again(client, task_queue, tmp_path, unit, runner):
    settings = settings_for(tmp_path, unit.name, task_queue, None)
    first_start = datetime.now(timezone.utc) - timedelta(seconds=30)
    async with running_worker(client, settings, runner), app(client, task_queue) as http:
        # Episode 1: the restart cannot fix it (the next start fails), verification fails.
        unit.fail_flag.touch()
        first = await post(http, generic_body(first_start))
        record: AuditRecord = await ended(client.get_workflow_handle(first["id"], result_type=AuditRecord))
        assert record.outcome == "verification_failed", record.outcome_detail
        acted = unit.start_count()
        for _ in range(3):
            again = await post(http, generic_body(first_start))
            assert again["id"] == first["id"] and again["state"] in {"duplicate", "already delivered"}
        async with app(client, task_queue) as fresh:  # another ingress process, nothing cached
            assert (await post(fresh, generic_body(first_start)))["state"] == "duplicate"
        assert unit.start_count() == acted  # nothing ran again

        # The alert resolves; the unit is fixed by people; the symptom returns: a new episode.
        assert (await post(http, generic_body(first_start, "resolved")))["state"] == "no open incident"
        unit.fail_flag.unlink()
        unit.sd.systemctl("restart", unit.name)
        # Type=simple: systemctl returns once the process is forked; wait for its first line.
        people_fixed_it = unit.sd.wait_until(lambda: unit.start_count() == acted + 1 and unit.start_count(), timeout=15)
        second_start = datetime.now(timezone.utc)
        second = await post(http, generic_body(second_start))
        assert second["id"] != first["id"] and second["state"] == "delivered"
        # Failure memory: the same entry and target failed verification in episode 1, so
        # episode 2 does not act alone, past the cooldown or not: people decide.
        handle = client.get_workflow_handle(second["id"], result_type=AuditRecord)
        await wait_status(handle, "awaiting_approval")
        decision = (await handle.query(IncidentWorkflow.audit)).decision
        assert (decision.declared_tier, decision.tier) == ("instance", "service")
        assert any("verification_failed" in why and first["id"] in why for why in decision.raised_by), decision.raised_by
        assert unit.start_count() == people_fixed_it
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record = await handle.result()
        assert record.outcome == "remediated", record.outcome_detail
        assert unit.start_count() == people_fixed_it + 1

        # And a re-send of episode 2 after its remediation starts nothing either.
        assert (await post(http, generic_body(second_start)))["state"] in {"duplicate", "already delivered"}
    assert await incidents_for(client, "api.ApiDown.generic-api-down") == sorted([first["id"], second["id"]])
    assert unit.start_count() == people_fixed_it + 1
