"""The baseline workflow of bench/fleet_storm.py: a fixed number of sequential no-op
activities, one of which (the "executor step") has its own activity type so its start
can be found in history.

In a module of its own, doing nothing at import, because the workflow sandbox re-imports
a workflow's module and the benchmark script has top-level code. It imports nothing from
selfheal, so the baseline does not move when selfheal's workflows change.
"""

from datetime import timedelta

from temporalio import activity, workflow

BARE_EXECUTOR = "fleet_bare_executor"


@activity.defn(name="fleet_bare_step")
async def step(n: int) -> int:
    return n


@activity.defn(name=BARE_EXECUTOR)
async def executor(n: int) -> int:
    return n


@workflow.defn(name="FleetBare")
class FleetBare:
    @workflow.run
    async def run(self, steps: int, executor_step: int) -> int:
        """``steps`` activities in sequence; the ``executor_step``-th (1-based) is the executor."""
        total = 0
        for n in range(1, steps + 1):
            fn = executor if n == executor_step else step
            total += await workflow.execute_activity(fn, n, start_to_close_timeout=timedelta(seconds=60))
        return total
