"""Baseline workflows that run an AWS incident's activities, with the same inputs,
timeouts and retries, and nothing else (no policy in the workflow, no signature check, no
audit record, no search attributes):

- ``BareAwsApproval`` (bench/approve_many_dev.py): wait for a signal, then what an approved
  incident runs;
- ``BareAwsAutomatic`` (bench/fleet_storm.py ``--sequential``): what an automatic ``ec2.reboot``
  incident runs, from loading the policy to notifying.

In a module of its own, doing nothing at import, because the workflow sandbox re-imports
a workflow's module and the benchmark script has top-level code. (bench/bare.py holds the
systemd equivalent, ``BareApproval``.)
"""

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from selfheal.contract import (ActionRequest, DiagnoseInput, Diagnosis, Notification, RemediationInput, RemediationResult,
                                 Verification, VerifyInput, WorldState)
    from selfheal.contract import LoadPolicy, PolicySnapshot
    from selfheal.workflows import timeouts as wf
    from selfheal.workflows.timeouts import NOTIFY_RETRY, NOTIFY_TIMEOUT
    from selfheal.contract.governor import Assessed, AssessInput, Reserved, ReserveInput


HEARTBEAT = timedelta(seconds=5)  # the settings' default heartbeat timeout, as the incident's


class BareAwsApprovalInput(BaseModel):
    """Everything an approved incident's activities take, prepared up front."""

    executor: str  # the AWS kind's executor activity (workflows/incident.py AWS_EXECUTORS)
    reservation: ReserveInput
    remediation: RemediationInput
    verify: VerifyInput
    note: Notification


@workflow.defn
class BareAwsApproval:
    """Wait for ``approve``, then: reserve at the entry governor, read the world, run the
    executor, verify, notify; nothing else (no policy, no signature check, no audit record,
    no search attributes)."""

    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, inp: BareAwsApprovalInput) -> str:
        await workflow.wait_condition(lambda: self._go)
        hb = HEARTBEAT
        await workflow.execute_activity("reserve_action", inp.reservation, result_type=Reserved,
                                        start_to_close_timeout=wf.RESERVE_TIMEOUT, heartbeat_timeout=hb,
                                        retry_policy=wf.GOVERNOR_RETRY)
        baseline = await workflow.execute_activity("read_world", inp.remediation.request, result_type=WorldState,
                                                   start_to_close_timeout=wf.READ_TIMEOUT, heartbeat_timeout=hb,
                                                   retry_policy=wf.WORLD_READ_RETRY)
        result = await workflow.execute_activity(inp.executor, inp.remediation.model_copy(update={"baseline": baseline}),
                                                 result_type=RemediationResult, start_to_close_timeout=timedelta(minutes=10),
                                                 heartbeat_timeout=hb, retry_policy=wf.REMEDIATION_RETRY)
        await workflow.execute_activity("verify_remediation", inp.verify, result_type=Verification,
                                        start_to_close_timeout=timedelta(seconds=inp.verify.timeout_seconds) + wf.VERIFY_MARGIN,
                                        heartbeat_timeout=hb, retry_policy=wf.READ_RETRY)
        await workflow.execute_activity("notify_webhook", inp.note, result_type=str, start_to_close_timeout=NOTIFY_TIMEOUT,
                                        heartbeat_timeout=hb, retry_policy=NOTIFY_RETRY)
        return result.action

    @workflow.signal
    def approve(self) -> None:
        self._go = True


class BareAwsAutomaticInput(BaseModel):
    """An automatic incident's activity inputs, prepared up front (the request already
    names the instances the first read would find)."""

    executor: str
    policy: LoadPolicy
    diagnose: DiagnoseInput
    request: ActionRequest
    assess: AssessInput
    remediation: RemediationInput
    verify: VerifyInput
    note: Notification
    # Set: a no-op step on this task queue takes assess_action's place, so the same number
    # of durable steps runs without the governor: what the world (AWS reads and writes,
    # the policy's load, the diagnosis) costs alone (bench/fleet_storm.py, "world only").
    noop_queue: str | None = None


@workflow.defn
class BareAwsAutomatic:
    """load_policy, diagnose, read_world, assess_action (the entry governor decides and
    reserves), read_world, the executor, verify, notify: an automatic ``ec2.reboot``
    incident's durable steps, in order, and nothing else."""

    @workflow.run
    async def run(self, inp: BareAwsAutomaticInput) -> str:
        hb = HEARTBEAT
        await workflow.execute_activity("load_policy", inp.policy, result_type=PolicySnapshot, start_to_close_timeout=wf.POLICY_TIMEOUT,
                                        heartbeat_timeout=wf.POLICY_HEARTBEAT, retry_policy=wf.READ_RETRY)
        await workflow.execute_activity("diagnose", inp.diagnose, result_type=Diagnosis, schedule_to_close_timeout=timedelta(minutes=5),
                                        start_to_close_timeout=wf.READ_TIMEOUT, heartbeat_timeout=hb, retry_policy=wf.READ_RETRY)
        read = {"result_type": WorldState, "start_to_close_timeout": wf.READ_TIMEOUT, "heartbeat_timeout": hb,
                "retry_policy": wf.WORLD_READ_RETRY}
        await workflow.execute_activity("read_world", inp.request, **read)  # before deciding
        if inp.noop_queue is None:
            await workflow.execute_activity("assess_action", inp.assess, result_type=Assessed, start_to_close_timeout=wf.RESERVE_TIMEOUT,
                                            heartbeat_timeout=hb, retry_policy=wf.GOVERNOR_RETRY)
        else:
            await workflow.execute_activity("fleet_bare_step", 4, result_type=int, task_queue=inp.noop_queue,
                                            start_to_close_timeout=timedelta(seconds=60))
        baseline = await workflow.execute_activity("read_world", inp.request, **read)  # right before acting
        result = await workflow.execute_activity(inp.executor, inp.remediation.model_copy(update={"baseline": baseline}),
                                                 result_type=RemediationResult, start_to_close_timeout=timedelta(minutes=10),
                                                 heartbeat_timeout=hb, retry_policy=wf.REMEDIATION_RETRY)
        await workflow.execute_activity("verify_remediation", inp.verify, result_type=Verification,
                                        start_to_close_timeout=timedelta(seconds=inp.verify.timeout_seconds) + wf.VERIFY_MARGIN,
                                        heartbeat_timeout=hb, retry_policy=wf.READ_RETRY)
        await workflow.execute_activity("notify_webhook", inp.note, result_type=str, start_to_close_timeout=NOTIFY_TIMEOUT,
                                        heartbeat_timeout=hb, retry_policy=NOTIFY_RETRY)
        return result.action
