"""EntryGovernorWorkflow: one entry's decisions, seen by every incident that uses it.

Autonomy must be bounded across incidents, not only inside one: five hosts alerting at
once must not be restarted one by one by five incidents that each think they are alone.
So every decision and every reservation of an entry is an update on this workflow, which
Temporal runs one at a time: concurrent incidents of the entry see each other's claims.
Entries are independent (their limits, claims and failures are their own), so each has
its own workflow, and a fleet's decisions do not queue behind one another.

It holds the entry's executions (rate limits, cooldowns), the targets claimed for
autonomous action, and the failures (failure memory); the deployment's
``GovernorWorkflow`` holds the pauses and breakers, which the caller reads (its
``brake`` query) and hands in with each decision. The policy itself
(``selfheal.whitelist.decide``) stays pure, and so does the governor's decision
(``governed.governed_decision``, which ``selfheal whitelist test`` calls too).

What an update carries is what the decision needs: the whitelist's hash and the request.
The whitelist itself (``Whitelist.for_entry``, a ``Policy``: tiers, groups, the entry as
deciding reads it; its size does not grow with the file) is learned once per hash; an
update naming a hash this workflow does not hold is refused with ``UnknownWhitelist`` and
the caller teaches it first (``learn``).

Messages:
  update ``learn(Learn)``                 what deciding needs of a whitelist, by its hash
  update ``assess(Assess) -> Assessed``    decide, and claim the targets if it is autonomous
                                           (and reserve it at once, under the current whitelist)
  update ``reserve(Reserve) -> Reserved``  decide again right before acting; record the execution
  update ``record_outcome(Outcome) -> str`` a failed action feeds failure memory; "open the
                                           breaker: ..." when its threshold is reached
  query  ``ledger() -> EntryStatus``
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal.contract.governor import (
        BREAKER, ENTRY_GOVERNOR_WORKFLOW, UNKNOWN_WHITELIST, Assess, Assessed, EntryGovernor, EntryState, EntryStatus,
        Learn, Outcome, Reserve, Reserved,
    )
    from selfheal.whitelist import Decision, Execution, Policy
    from selfheal.whitelist.durations import format_duration
    from selfheal.whitelist.vocabulary import Act
    from selfheal.workflows.governed import governed_decision

RETAIN = timedelta(days=30)  # nothing older counts against any sensible window
KEEP_POLICIES = 16  # whitelists known by hash across continue-as-new; an older one is learned again
KEEP_OUTCOMES = 2_000
# Longer than any incident waits to act (its approval window, 4 h by default, then the
# action and the verification): its reservation may be asked for again until then.
INCIDENT_LIFETIME = timedelta(days=2)
FAILED_OUTCOMES = frozenset({"verification_failed", "failed"})


@workflow.defn(name=ENTRY_GOVERNOR_WORKFLOW)
class EntryGovernorWorkflow:
    @workflow.init
    def __init__(self, state: EntryState) -> None:
        self._state = state
        self._updates = 0

    @workflow.run
    async def run(self, state: EntryState) -> None:
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() or self._updates >= self._state.updates_per_run
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._pruned())

    @workflow.update(name=EntryGovernor.LEARN)
    def learn(self, inp: Learn) -> str:
        self._updates += 1
        self._state.policies.pop(inp.whitelist_sha256, None)  # most recent last
        self._state.policies[inp.whitelist_sha256] = inp.policy
        return inp.whitelist_sha256

    @workflow.update(name=EntryGovernor.ASSESS)
    def assess(self, inp: Assess) -> Assessed:
        self._updates += 1
        earlier = self._state.assessed.get(inp.incident_id)
        if earlier is not None:
            return earlier  # a retried assessment is the same decision
        for sha256 in filter(None, (inp.whitelist_sha256, inp.reserve and inp.reservation_sha256())):
            self._policy(sha256)  # both known before anything changes, or the caller teaches first
        assessed = Assessed(decision=self._decide(inp))
        if assessed.decision.kind == "auto":
            # Claimed now, before acting: a concurrent incident's assessment counts it.
            self._state.autonomous.append(
                Act(targets=assessed.decision.targets, at=workflow.now(), incident_id=inp.incident_id))
            if inp.reserve:
                reserved = self._reserve(Reserve(**{**inp.model_dump(), "whitelist_sha256": inp.reservation_sha256()}))
                # Said once: the activity puts back what the incident already knows.
                assessed.reserved = reserved.said_once(inp.incident_id, inp.request.entry_id, assessed.decision)
        self._state.assessed[inp.incident_id] = assessed
        return assessed

    @workflow.update(name=EntryGovernor.RESERVE)
    def reserve(self, inp: Reserve) -> Reserved:
        self._updates += 1
        return self._reserve(inp).said_once(inp.incident_id, inp.request.entry_id, None)

    def _reserve(self, inp: Reserve) -> Reserved:
        decision = self._decide(inp)
        approved = set(inp.approved_by) & set(decision.approvers)
        allowed = decision.kind == "auto" or (decision.kind == "needs_approval" and len(approved) >= decision.approvals)
        earlier = self._state.reservations.get(inp.key())
        if earlier is not None and (allowed or not earlier.autonomous):
            # The same execution, not a second: a retried reservation, or one approved since.
            return Reserved(granted=True, decision=decision, execution=earlier)
        if not allowed:
            # Denied, or the tier rose and people decide again: this incident no longer
            # acts alone, so its claim stops counting against other targets. An autonomous
            # reservation it held never ran (the executor refused it at the brake, or the
            # incident had not reached the executor): it is withdrawn.
            self._withdraw(inp.incident_id, inp.key())
            return Reserved(granted=False, decision=decision)
        now = workflow.now()
        execution = Execution(entry_id=inp.request.entry_id, started_at=now, incident_id=inp.incident_id,
                              targets=decision.targets, autonomous=not approved)
        self._state.executions.append(execution)
        if execution.autonomous and not any(a.incident_id == inp.incident_id for a in self._state.autonomous):
            self._state.autonomous.append(Act(targets=decision.targets, at=now, incident_id=inp.incident_id))
        self._state.reservations[inp.key()] = execution
        return Reserved(granted=True, decision=decision, execution=execution)

    @workflow.update(name=EntryGovernor.RECORD_OUTCOME)
    def record_outcome(self, outcome: Outcome) -> str:
        self._updates += 1
        key = f"{outcome.incident_id}:{outcome.outcome}"
        if key in self._state.outcomes:
            return self._state.outcomes[key]  # a retried report gets the same answer
        if outcome.whitelist_sha256:
            self._policy(outcome.whitelist_sha256)  # its breaker threshold, known before anything changes
        answer = self._remember(outcome)
        self._state.outcomes[key] = answer
        return answer

    @workflow.query(name=EntryGovernor.LEDGER)
    def ledger(self) -> EntryStatus:
        now = workflow.now()
        policy = next(reversed([p for p in self._state.policies.values() if p is not None]), None)
        status = EntryStatus(entry_id=self._state.entry_id)
        if policy is None:
            return status
        entry = policy.entries[0]
        window = entry.autonomy.window
        return status.model_copy(update={
            "autonomous_targets": sorted({t for a in self._state.autonomous if a.at > now - window for t in a.targets}),
            "window": format_duration(window),
            "executions_in_rate_window": sum(e.started_at > now - entry.rate_limit.window for e in self._state.executions),
            "recent_failures": [f for f in self._state.failures if f.at > now - entry.failure_memory.window],
        })

    # --- helpers -----------------------------------------------------------------------

    def _policy(self, sha256: str) -> Policy | None:
        if sha256 not in self._state.policies:
            # Not a refusal of the request: the caller teaches this whitelist and asks again.
            raise ApplicationError(f"whitelist {sha256[:12]} is not known here", sha256, type=UNKNOWN_WHITELIST,
                                   non_retryable=True)
        return self._state.policies[sha256]

    def _decide(self, inp: Assess) -> Decision:
        entry_id = inp.request.entry_id
        policy = self._policy(inp.whitelist_sha256)
        if policy is None:
            return Decision.deny(entry_id, "unknown_entry", f"whitelist {inp.whitelist_sha256[:12]} has no entry {entry_id!r}")
        return governed_decision(policy, inp.request, incident_id=inp.incident_id, now=workflow.now(),
                                 executions=self._state.executions, autonomous=self._state.autonomous,
                                 failures=self._state.failures, brake=inp.brake, raised_by=inp.raised_by)

    def _withdraw(self, incident_id: str, key: str) -> None:
        earlier = self._state.reservations.pop(key, None)
        if earlier is not None and earlier.autonomous:
            self._state.executions = [e for e in self._state.executions if e != earlier]
        self._state.autonomous = [a for a in self._state.autonomous if a.incident_id != incident_id]

    def _remember(self, outcome: Outcome) -> str:
        if outcome.outcome not in FAILED_OUTCOMES:
            return "nothing to remember"
        now = workflow.now()
        self._state.failures.append(Act(targets=outcome.targets, at=now, incident_id=outcome.incident_id, note=outcome.outcome))
        policy = self._state.policies.get(outcome.whitelist_sha256)
        if policy is None:
            return "remembered"
        breaker = policy.entries[0].breaker
        failures = [f for f in self._state.failures if f.note == "verification_failed" and f.at > now - breaker.window]
        if len(failures) < breaker.failures:
            return "remembered"
        return (f"{BREAKER}{len(failures)} verification failures within {format_duration(breaker.window)} "
                f"(incidents {', '.join(f.incident_id for f in failures)})")

    def _pruned(self) -> EntryState:
        """The state the next run needs: what still counts against the entry's windows (the
        longest of every whitelist it knows, at most RETAIN), and the reservations and
        assessments of incidents that may still ask again. Kept by window, not for RETAIN
        flat: a busy entry's 1,000 decisions carried 0.5 MB into every new run, and a run's
        input has Temporal's 2 MB payload limit."""
        now = workflow.now()
        state = self._state.model_copy(deep=True)
        state.policies = dict(list(state.policies.items())[-KEEP_POLICIES:])
        entries = [p.entries[0] for p in state.policies.values() if p is not None]

        def kept_for(window) -> timedelta:
            return min(RETAIN, max((window(e) for e in entries), default=RETAIN))

        executions = now - kept_for(lambda e: max(e.rate_limit.window, e.cooldown))
        autonomous = now - kept_for(lambda e: e.autonomy.window)
        failures = now - kept_for(lambda e: max(e.failure_memory.window, e.breaker.window))
        state.executions = [e for e in state.executions if e.started_at > executions]
        state.autonomous = [a for a in state.autonomous if a.at > autonomous]
        state.failures = [f for f in state.failures if f.at > failures]
        # An incident asks again (a retried activity, a brake, an approval) only while it runs.
        state.reservations = {k: v for k, v in state.reservations.items() if v.started_at > now - INCIDENT_LIFETIME}
        live = {a.incident_id for a in state.autonomous} | {e.incident_id for e in state.reservations.values()}
        state.assessed = {k: v for k, v in state.assessed.items() if k in live}
        state.outcomes = dict(list(state.outcomes.items())[-KEEP_OUTCOMES:])
        return state
