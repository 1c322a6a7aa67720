"""Temporal goes away: the ingress answers 503 quickly, Alertmanager retries, nothing is lost."""

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
from temporalio.service import RPCError

from selfheal.ingress.server import build
from tests.conftest import temporal_binary
from tests.ingress.conftest import TOKEN, settings
from tests.ingress.payloads import alertmanager, body, incidents_for, key
from tests.ingress.served import free_port, serving
from tests.support.alertmanager import Alertmanager, require_alertmanager
from tests.support.devserver import DevServer
from tests.workflows.helpers import wait_for

BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@asynccontextmanager
async def ingress_with_its_own_temporal(tmp_path):
    """The served ingress's app on a dev server of this test's own, which the test may stop."""
    temporal = DevServer(temporal_binary(), tmp_path / "temporal.db", free_port())
    temporal.start()
    try:
        await temporal.client()
        async with httpx.AsyncClient() as http:
            yield temporal, await build(settings(), temporal.address, "outage-queue", http)
    finally:
        temporal.stop()


async def test_ingress_answers_503_while_temporal_is_down_and_alertmanagers_retry_lands(tmp_path):
    require_alertmanager()
    async with ingress_with_its_own_temporal(tmp_path) as (temporal, app):
        async with serving(app) as (base, answered):
            temporal.stop()
            with Alertmanager(f"{base}/v1/alerts/alertmanager", bearer_token=TOKEN) as am:
                await asyncio.to_thread(am.post_alerts, [{"labels": {"alertname": "IngressTest", "instance": "db-1"}}])
                [fingerprint] = [a["fingerprint"] for a in await asyncio.to_thread(am.alerts)]

                async def refused():
                    return ("/v1/alerts/alertmanager", 503) in answered

                await wait_for(refused, timeout=30)
                assert ("/v1/alerts/alertmanager", 202) not in answered

                temporal.start()
                client = await temporal.client()

                async def landed():
                    try:
                        return await incidents_for(client, key(f"am-{fingerprint}", service=None))
                    except RPCError:
                        return None

                [incident_id] = await wait_for(landed, timeout=60, interval=0.3)
                description = await client.get_workflow_handle(incident_id).describe()
    assert description.workflow_type == "IncidentWorkflow"
    assert ("/v1/alerts/alertmanager", 202) in answered
    first_503 = answered.index(("/v1/alerts/alertmanager", 503))
    assert answered.index(("/v1/alerts/alertmanager", 202)) > first_503


async def test_ingress_answers_503_within_6_seconds_of_temporal_going_away(tmp_path):
    async with ingress_with_its_own_temporal(tmp_path) as (temporal, app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as ingress:
            up = await ingress.post("/v1/alerts/alertmanager", content=body(alertmanager()), headers=BEARER)
            assert up.status_code == 202, up.text  # the client is connected and warm
            temporal.stop()
            timings = []
            for fingerprint in ("0000000000000a01", "0000000000000a02"):
                began = time.monotonic()
                payload = alertmanager({**alertmanager()["alerts"][0], "fingerprint": fingerprint})
                down = await ingress.post("/v1/alerts/alertmanager", content=body(payload), headers=BEARER)
                timings.append(time.monotonic() - began)
                assert down.status_code == 503, down.text
                assert down.json()["retry"] is True and down.headers["retry-after"]
    assert max(timings) < 6.0, timings
