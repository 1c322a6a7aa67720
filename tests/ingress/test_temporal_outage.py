"""Temporal goes away: the ingress answers 503, Alertmanager retries, nothing is lost."""

import asyncio
import subprocess

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from selfheal.ingress.server import build
from tests.conftest import temporal_binary
from tests.ingress.conftest import TOKEN, settings
from tests.ingress.served import free_port, serving
from tests.support.alertmanager import Alertmanager, require_alertmanager
from tests.workflows.helpers import wait_for


class DevServer:
    """A Temporal dev server with a SQLite file, stopped and started again on the same port."""

    def __init__(self, db, port: int):
        self.db, self.port, self.proc = db, port, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(temporal_binary()), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
             "--db-filename", str(self.db), "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def client(self) -> Client:
        async def connect():
            try:
                return await Client.connect(f"127.0.0.1:{self.port}")
            except RuntimeError:
                return None

        return await wait_for(connect, timeout=60, interval=0.2)


async def test_ingress_answers_503_while_temporal_is_down_and_alertmanagers_retry_lands(tmp_path):
    require_alertmanager()
    temporal = DevServer(tmp_path / "temporal.db", free_port())
    temporal.start()
    try:
        await temporal.client()
        async with httpx.AsyncClient() as http:
            app = await build(settings(), f"127.0.0.1:{temporal.port}", "outage-queue", http)
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
                            return await client.get_workflow_handle(f"am-{fingerprint}").describe()
                        except RPCError:
                            return None

                    description = await wait_for(landed, timeout=60, interval=0.3)
        assert description.workflow_type == "IncidentWorkflow"
        assert ("/v1/alerts/alertmanager", 202) in answered
        first_503 = answered.index(("/v1/alerts/alertmanager", 503))
        assert answered.index(("/v1/alerts/alertmanager", 202)) > first_503
    finally:
        temporal.stop()
