"""RemediationLedgerWorkflow: one long-lived workflow per whitelist entry, counting executions.

Rate limits and cooldowns span incidents, so they need one place that sees every
execution of an entry. Reservations arrive as updates, which Temporal runs one at a
time on this workflow: two incidents approved at the same moment cannot both slip under
a limit of one. The incident workflow reserves through an activity (workflows cannot
send updates themselves) immediately before it acts.

Messages: update ``reserve(Reservation) -> ReservationResult``; query ``executions``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from selfheal.models import Execution
    from selfheal.whitelist.durations import Duration
    from selfheal.whitelist.models import RateLimit
    from selfheal.whitelist.policy import check_limits

# Executions older than this cannot count against any sensible window; dropped at continue-as-new.
RETAIN = timedelta(days=30)
# Temporal refuses more than 2,000 updates per run (history.maxTotalUpdates); start afresh
# well before, carrying the state over.
UPDATES_PER_RUN = 500


def ledger_id(task_queue: str, entry_id: str) -> str:
    # Per task queue: the queue names one deployment (and its whitelist); deployments
    # sharing a namespace keep separate counts.
    return f"selfheal-ledger:{task_queue}:{entry_id}"


class Reservation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_id: str
    incident_id: str
    idempotency_key: str
    rate_limit: RateLimit
    cooldown: Duration


class ReservationResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granted: bool
    rule: str | None = None
    reason: str | None = None
    execution: Execution | None = None


class LedgerState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_id: str
    executions: list[Execution] = []
    keys: dict[str, Execution] = {}


@workflow.defn
class RemediationLedgerWorkflow:
    @workflow.init
    def __init__(self, state: LedgerState) -> None:
        self._state = state
        self._updates = 0

    @workflow.run
    async def run(self, state: LedgerState) -> None:
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() or self._updates >= UPDATES_PER_RUN
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        cutoff = workflow.now() - RETAIN
        kept = [e for e in self._state.executions if e.started_at > cutoff]
        workflow.continue_as_new(
            LedgerState(
                entry_id=self._state.entry_id,
                executions=kept,
                keys={k: v for k, v in self._state.keys.items() if v.started_at > cutoff},
            )
        )

    @workflow.update
    def reserve(self, reservation: Reservation) -> ReservationResult:
        self._updates += 1
        earlier = self._state.keys.get(reservation.idempotency_key)
        if earlier is not None:
            # A retried reservation is the same execution, not a second one.
            return ReservationResult(granted=True, execution=earlier)
        now = workflow.now()
        refusal = check_limits(reservation.rate_limit, reservation.cooldown, self._state.executions, now)
        if refusal:
            return ReservationResult(granted=False, rule=refusal[0], reason=refusal[1])
        execution = Execution(entry_id=reservation.entry_id, started_at=now, incident_id=reservation.incident_id)
        self._state.executions.append(execution)
        self._state.keys[reservation.idempotency_key] = execution
        return ReservationResult(granted=True, execution=execution)

    @reserve.validator
    def _reserve_for_this_entry(self, reservation: Reservation) -> None:
        if reservation.entry_id != self._state.entry_id:
            raise ValueError(f"ledger of {self._state.entry_id!r} cannot reserve for {reservation.entry_id!r}")

    @workflow.query
    def executions(self) -> list[Execution]:
        return list(self._state.executions)
