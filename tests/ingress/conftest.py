"""Ingress fixtures: the real app and the real Temporal client, plus a worker whose incidents wait."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from selfheal.ingress.app import create_app
from selfheal.ingress.auth import SourceAuth
from selfheal.ingress.delivery import Delivery
from selfheal.ingress.settings import IngressSettings
from tests.workflows.helpers import FAST, TYPED_NAMES_COUNT, running_worker
from selfheal.settings import WorkerSettings

TOKEN = "test-token"
SECRET = "test-secret"

# An incident from alertname="IngressTest" waits for approval: it stays open for signals.
WHITELIST = """version: 1
metadata: {reviewed_by: [alice], reviewed_at: 2026-11-25}
""" + TYPED_NAMES_COUNT + """entries:
  - id: rollback-ingress
    kind: ecs.rollback
    target: {cluster: demo, service: ingress, task_definition: "ingress:1", region: eu-west-1, account: "123456789012"}
    blast_radius: service
    approvers: {people: [alice, bob]}
    rate_limit: {max_executions: 100, window: 1h}
    cooldown: 0s
    match: ['alertname="IngressTest"']
    verify: {timeout: 1m}
"""
RULES = """
signatures:
  - id: ingress-test
    summary: the test alert
    match: ['alertname="IngressTest"']
    propose: rollback-ingress
"""


def settings(**overrides) -> IngressSettings:
    values = dict(
        ui_url="http://ui.test",
        max_body_bytes=64 * 1024,
        sources={
            "alertmanager": SourceAuth(token=TOKEN),
            "grafana": SourceAuth(hmac_secret=SECRET),
            "generic": SourceAuth(token=TOKEN, hmac_secret=SECRET),
        },
    )
    values.update(overrides)
    return IngressSettings(**values)


@pytest.fixture
def delivery(client, task_queue) -> Delivery:
    return Delivery(client, task_queue, search_attributes=True)


@pytest_asyncio.fixture
async def http(delivery):
    app = create_app(settings(), delivery)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress.test") as c:
        yield c


@pytest_asyncio.fixture
async def worker(client, task_queue, tmp_path):
    (tmp_path / "wl.yaml").write_text(WHITELIST)
    (tmp_path / "rules.yaml").write_text(RULES)
    s = WorkerSettings(task_queue=task_queue, whitelist=str(tmp_path / "wl.yaml"), diagnosis=str(tmp_path / "rules.yaml"), incident=FAST)
    async with running_worker(client, s):
        yield
