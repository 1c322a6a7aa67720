"""Baseline workflows for the benchmarks: N no-op activities (incident_overhead.py), and a
signal followed by an approved incident's activities (approve_many.py).

In a module of its own because the workflow sandbox re-imports a workflow's module, and
the benchmark script has top-level code.
"""

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from selfheal.contract import Notification, RemediationInput, RemediationResult, UnitState, Verification, VerifyInput
    from selfheal.workflows import timeouts as wf
    from selfheal.contract.governor import ReserveInput, Reserved


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


class BareApprovalInput(BaseModel):
    """Everything the incident's post-approval activities take, prepared up front."""

    reservation: ReserveInput
    remediation: RemediationInput
    verify: VerifyInput
    note: Notification


@workflow.defn
class BareApproval:
    """The baseline for bench/approve_many.py: wait for a signal, then run the same
    activities an approved incident runs (reserve at the governor, read, restart, verify, notify) with the
    same timeouts, and nothing else: no policy, no audit, no search attributes."""

    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, inp: BareApprovalInput) -> str:
        await workflow.wait_condition(lambda: self._go)
        # The incident's own timeouts and retry policies, so only the workflow around them differs.
        hb = timedelta(seconds=5)
        await workflow.execute_activity("reserve_action", inp.reservation, result_type=Reserved,
                                        start_to_close_timeout=wf.RESERVE_TIMEOUT, heartbeat_timeout=hb,
                                        retry_policy=wf.GOVERNOR_RETRY)
        baseline = await workflow.execute_activity("read_unit_state", inp.remediation.request, result_type=UnitState,
                                                   start_to_close_timeout=wf.READ_TIMEOUT, heartbeat_timeout=hb,
                                                   retry_policy=wf.WORLD_READ_RETRY)
        remediation = inp.remediation.model_copy(update={"baseline": baseline})
        result = await workflow.execute_activity("restart_unit", remediation, result_type=RemediationResult,
                                                 start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=hb,
                                                 retry_policy=wf.REMEDIATION_RETRY)
        await workflow.execute_activity("verify_remediation", inp.verify, result_type=Verification,
                                        start_to_close_timeout=timedelta(seconds=inp.verify.timeout_seconds) + wf.VERIFY_MARGIN,
                                        heartbeat_timeout=hb, retry_policy=wf.READ_RETRY)
        await workflow.execute_activity("notify_webhook", inp.note, result_type=str, start_to_close_timeout=wf.NOTIFY_TIMEOUT,
                                        heartbeat_timeout=hb, retry_policy=wf.NOTIFY_RETRY)
        return result.action

    @workflow.signal
    def approve(self) -> None:
        self._go = True
