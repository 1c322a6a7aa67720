"""The baseline workflow for bench/incident_overhead.py: N no-op activities, nothing else.

In a module of its own because the workflow sandbox re-imports a workflow's module, and
the benchmark script has top-level code.
"""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def noop(n: int) -> int:
    return n


@workflow.defn
class Bare:
    @workflow.run
    async def run(self, activities: int) -> int:
        total = 0
        for n in range(activities):
            total += await workflow.execute_activity(noop, n, start_to_close_timeout=timedelta(seconds=10))
        return total
