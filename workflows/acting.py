"""The act and verify stages of an incident: reserve at the entry's governor (again, if
people decided), read the target, run the kind's executor, and check that the symptom
cleared. A part of ``IncidentWorkflow`` (``incident.py``), kept apart so each stage reads
on its own; it uses the incident's record, snapshot and settings, and its ``_finish``,
``_governor`` and ``_assessment``."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal.contract import Check, RemediationInput, RemediationResult, Verification, VerifyInput
    from selfheal.contract.activities import reserve_action, verify_remediation
    from selfheal.contract.governor import BRAKED, ReserveInput, Reserved, reservation_key
    from selfheal.contract.kinds import KINDS
    from selfheal.whitelist.durations import format_duration
    from selfheal.workflows.approval_desk import ApprovalDesk
    from selfheal.workflows.timeouts import READ_RETRY, READ_TIMEOUT, REMEDIATION_RETRY, VERIFY_MARGIN, WORLD_READ_RETRY

RAISED = object()  # _act's answer when the tier rose and people must decide again


class Acting(ApprovalDesk):
    _acted_on: list[str] | None  # the targets the governor reserved for this incident
    _reserved: Reserved | None   # an automatic decision's reservation, not yet used
    _raised_by: list[str]

    async def _act(self, entry) -> RemediationResult | None:
        self._set_status("acting")
        kind = KINDS.get(entry.kind)
        if kind is None:
            await self._finish("failed", f"this worker has no executor for {entry.kind}")
            return None
        key = self._key(entry.id)
        # An automatic decision was reserved with it; after people decided, reserve now.
        reserved, self._reserved = self._reserved or await self._reserve(entry), None
        if not reserved.granted:
            return await self._refused_at_reservation(entry, reserved)
        self._acted_on = reserved.decision.targets
        baseline = await workflow.execute_activity(
            kind.reader, self._audit.request, start_to_close_timeout=READ_TIMEOUT, retry_policy=WORLD_READ_RETRY,
            heartbeat_timeout=self._settings.heartbeat_timeout, summary="read the world before acting",
        )
        try:
            result = await workflow.execute_activity(
                kind.executor,
                RemediationInput(incident_id=self._audit.incident_id, idempotency_key=key,
                                 whitelist_sha256=self._snapshot.sha256, request=self._audit.request, baseline=baseline,
                                 autonomous=reserved.execution.autonomous),
                start_to_close_timeout=self._settings.remediation_timeout,
                heartbeat_timeout=self._settings.remediation_heartbeat,
                retry_policy=REMEDIATION_RETRY,
                summary=f"{entry.kind} {entry.id}",
            )
        except ActivityError as exc:
            if error_type(exc) != BRAKED:
                raise
            # Autonomy was paused (or the breaker opened) after the reservation: the executor
            # refused before acting. Decided again, the governor withdraws the reservation
            # and people decide; if the brake was already released, the loop reserves anew.
            self._acted_on = None
            reserved = await self._reserve(entry)
            return RAISED if reserved.granted else await self._refused_at_reservation(entry, reserved)
        self._audit.remediation = result
        if result.action == "world_changed":
            await self._escalate(f"{entry.id} did not run: {result.detail}")
            await self._finish("world_changed", result.detail)
            return None
        return result

    async def _reserve(self, entry) -> Reserved:
        reserved = await self._governor(
            reserve_action, self._assessment(self._audit.request, ReserveInput,
                                             approved_by=list(self._approved_by), raised_by=self._raised_by),
            f"decide {entry.id} again and reserve it at the governor")
        self._audit.reserved_under_sha256 = reserved.whitelist_sha256
        return reserved

    def _key(self, entry_id: str) -> str:
        return reservation_key(self._audit.incident_id, entry_id)

    async def _refused_at_reservation(self, entry, reserved: Reserved):
        if reserved.decision.kind == "needs_approval":
            # The tier rose since the decision (a pause, a breaker, other targets acted
            # on): people decide again; the approvals already given still count.
            self._audit.earlier_decisions.append(self._audit.decision)
            self._audit.decision = reserved.decision
            await self._escalate(f"{entry.id} now needs {reserved.decision}")
            return RAISED
        decision = reserved.decision
        await self._escalate(f"{entry.id} was allowed but hit [{decision.rule}] before it could run")
        await self._finish("denied", f"[{decision.rule}] {decision.reason}")
        return None

    async def _verify(self, entry) -> Verification:
        self._set_status("verifying")
        timeout = entry.verify.timeout
        verification = await workflow.execute_activity(
            verify_remediation,
            VerifyInput(incident_id=self._audit.incident_id, request=self._audit.request, timeout_seconds=timeout.total_seconds()),
            start_to_close_timeout=timeout + VERIFY_MARGIN, heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=READ_RETRY, summary=f"verify {entry.id}",
        )
        if entry.verify.alert_resolves:
            try:
                await workflow.wait_condition(lambda: self._audit.resolved, timeout=timeout)
                check = Check(name="alert resolves", ok=True, detail="the alerts resolved")
            except asyncio.TimeoutError:
                check = Check(name="alert resolves", ok=False, detail=f"still firing after {format_duration(timeout)}")
            verification = Verification(ok=verification.ok and check.ok, checks=[*verification.checks, check])
        self._audit.verification = verification
        return verification


def error_type(exc: ActivityError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None
