import json
from pathlib import Path

import pytest_asyncio


def pytest_collection_modifyitems(config, items):
    # Only when recording: the fast tier must start no server. Put in each test's fixture
    # closure, first, rather than requested from inside an autouse fixture: an async fixture
    # cannot set up another one (the server) from its own running loop.
    if config.getoption("--record-histories"):
        for item in items:
            if "record_histories" not in item.fixturenames:
                item.fixturenames.insert(0, "record_histories")


@pytest_asyncio.fixture(scope="session")
async def record_histories(temporal_env):
    """With --record-histories, save each finished incident's history for the replay test."""
    from tests.workflows.helpers import STARTED

    yield
    out = Path(__file__).parent / "histories"
    out.mkdir(exist_ok=True)
    ids_file = out / "workflow_ids.json"
    ids = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    for test, handle in STARTED:
        description = await handle.describe()
        if description.status is None or description.status.name not in ("COMPLETED", "FAILED"):  # failed: a failed remediation
            continue
        history = await handle.fetch_history()
        (out / f"{test}.json").write_text(history.to_json())
        # A history does not hold its workflow id, and an incident's behaviour can depend
        # on it (a signed approval names its incident): replay with the original.
        ids[test] = handle.id
    ids_file.write_text(json.dumps(dict(sorted(ids.items())), indent=1) + "\n")
