"""A real Alertmanager posts to the real ingress, which hands alerts to real Temporal."""

import asyncio

from selfheal.ingress.app import create_app
from selfheal.contract import AuditRecord
from tests.ingress.conftest import TOKEN, settings
from tests.ingress.payloads import incidents_for, key
from tests.ingress.served import serving
from tests.support.alertmanager import Alertmanager, require_alertmanager
from tests.workflows.helpers import wait_for, wait_status
from selfheal.workflows.incident import IncidentWorkflow

LABELS = {"alertname": "IngressTest", "service": "ingress", "instance": "web-1"}


async def test_alertmanager_webhooks_open_one_incident_repeat_into_it_and_resolve_it(client, delivery, worker):
    require_alertmanager()
    app = create_app(settings(), delivery)
    async with serving(app) as (base, answered):
        # repeat_interval 2s: Alertmanager re-sends the still-firing group, a real duplicate.
        with Alertmanager(f"{base}/v1/alerts/alertmanager", bearer_token=TOKEN, repeat_interval="2s") as am:
            await asyncio.to_thread(am.post_alerts, [{"labels": LABELS, "annotations": {"summary": "from alertmanager"}}])
            [fingerprint] = [a["fingerprint"] for a in await asyncio.to_thread(am.alerts)]

            async def delivered():
                return ("/v1/alerts/alertmanager", 202) in answered and await incidents_for(client, key(f"am-{fingerprint}"))

            [incident_id] = await wait_for(delivered, timeout=30)
            handle = client.get_workflow_handle(incident_id, result_type=AuditRecord)
            await wait_status(handle, "awaiting_approval")
            first_run = (await handle.describe()).run_id
            record = await handle.query(IncidentWorkflow.audit)
            assert [(a.source, a.fingerprint, a.labels["instance"]) for a in record.alerts] == [("alertmanager", fingerprint, "web-1")]

            async def repeated():
                return answered.count(("/v1/alerts/alertmanager", 202)) >= 2

            await wait_for(repeated, timeout=30)
            assert (await handle.describe()).run_id == first_run
            assert await incidents_for(client, key(f"am-{fingerprint}")) == [incident_id]
            assert len((await handle.query(IncidentWorkflow.audit)).alerts) == 1  # the repeat is the same alert

            await asyncio.to_thread(am.resolve, LABELS)
            record = await asyncio.wait_for(handle.result(), timeout=30)
    assert record.outcome == "resolved_without_action"
    assert [a.status for a in record.alerts] == ["firing", "resolved"]
    assert {status for _, status in answered} == {202}
