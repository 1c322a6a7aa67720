import json
from pathlib import Path

import pytest_asyncio


@pytest_asyncio.fixture(scope="session", autouse=True)
async def record_histories(request):
    """With --record-histories, save each finished incident's history for the replay test."""
    from tests.workflows.helpers import STARTED

    recording = request.config.getoption("--record-histories")
    if recording:  # the server must outlive this teardown; without recording, start none (the fast tier)
        request.getfixturevalue("temporal_env")
    yield
    if not recording:
        return
    out = Path(__file__).parent / "histories"
    out.mkdir(exist_ok=True)
    ids_file = out / "workflow_ids.json"
    ids = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    for test, handle in STARTED:
        description = await handle.describe()
        if description.status is None or description.status.name != "COMPLETED":
            continue
        history = await handle.fetch_history()
        (out / f"{test}.json").write_text(history.to_json())
        # A history does not hold its workflow id, and an incident's behaviour can depend
        # on it (a signed approval names its incident): replay with the original.
        ids[test] = handle.id
    ids_file.write_text(json.dumps(dict(sorted(ids.items())), indent=1) + "\n")
