import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from activities.runner import LocalRunner
from tests.conftest import require
from tests.support.systemd_user import SystemdUser, _missing_requirements


@pytest.fixture(scope="session")
def systemd_user():
    require("systemd --user", "; ".join(_missing_requirements()) or None)
    with SystemdUser() as sd:
        yield sd


class TestUnit:
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
    u = TestUnit(systemd_user, tmp_path)
    yield u
    u.remove()


@pytest.fixture
def runner(systemd_user):
    # Enter the harness's mount namespace so journalctl finds its journal, as on a real host.
    return LocalRunner(systemd_user.ns_command_prefix)


@pytest_asyncio.fixture(scope="session", autouse=True)
async def record_histories(request, temporal_env):
    """With --record-histories, save each finished incident's history for the replay test."""
    from tests.workflows.helpers import STARTED

    yield
    if not request.config.getoption("--record-histories"):
        return
    out = Path(__file__).parent / "histories"
    out.mkdir(exist_ok=True)
    for test, handle in STARTED:
        description = await handle.describe()
        if description.status is None or description.status.name != "COMPLETED":
            continue
        history = await handle.fetch_history()
        (out / f"{test}.json").write_text(history.to_json())
