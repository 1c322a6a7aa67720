"""IncidentWorkflow: one durable workflow per incident; its id is the incident key."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from selfheal import search
    from selfheal.identity import attest
    from selfheal.contract import (
        AgentResult, Alert, AlertBatch, AuditRecord, Check, Decision, DiagnoseInput, Diagnosis, IncidentInput, LoadPolicy,
        RemediationInput, RemediationResult, Verification, VerifyInput,
    )
    from selfheal.contract.activities import (
        assess_action, diagnose, load_policy, read_world, record_outcome, reserve_action, verify_remediation,
    )
    from selfheal.contract.governor import BRAKED, AssessInput, Outcome, ReserveInput, Reserved
    from selfheal.contract.kinds import KINDS
    from selfheal.contract.workflows import DIAGNOSIS_WORKFLOW, DRILL_WORKFLOW, INCIDENT_WORKFLOW, Incident
    from selfheal.whitelist import decide, matching_entries
    from selfheal.whitelist.durations import format_duration
    from selfheal.workflows import agent_answer, drill, metrics, requests
    from selfheal.workflows.approval_desk import ApprovalDesk, cause_text
    from selfheal.workflows.requests import build_request

# Timeouts and retries. Reads retry freely; writes retry little and never when out of policy.
# Every activity also has a heartbeat timeout (the settings' heartbeat_timeout): a worker
# killed mid-activity is noticed in seconds, not when the start-to-close timeout expires.
POLICY_TIMEOUT = timedelta(seconds=30)
POLICY_HEARTBEAT = timedelta(seconds=5)  # before the settings are known
# A reservation waits out a busy governor (Temporal admits 10 updates in flight per workflow).
RESERVE_TIMEOUT = timedelta(minutes=30)
READ_TIMEOUT = timedelta(seconds=60)
VERIFY_MARGIN = timedelta(seconds=30)
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1))
# Reading the world right before acting: a host that stays unreachable fails the incident
# with the reason instead of retrying forever.
WORLD_READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=5,
                               non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"])
REMEDIATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"],
)
GOVERNOR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)


RAISED = object()  # _act's answer when the tier rose and people must decide again
MAX_RECORDED_ALERTS = 200


@workflow.defn(name=INCIDENT_WORKFLOW)
class IncidentWorkflow(ApprovalDesk):
    """One incident, from first alert to audit record.

    Stages: observe -> diagnose -> decide -> wait (for people, if the tier says so) ->
    act -> verify -> record. The result, and the ``audit`` query, is the AuditRecord.

    Messages:
      signal ``alerts(AlertBatch)``     more alerts for this incident (resolved ones too)
      signal ``resolved()``             the problem went away
      update ``approve(Approval)``      an allowed person approves; refusals fail the update
      update ``reject(Rejection)``      an allowed person says no
      signal ``approve_signal(Approval)``, ``reject_signal(Rejection)``
                                        the same, for the Temporal UI and ``temporal workflow signal``
      query  ``audit`` -> AuditRecord;  query ``status`` -> the current step
    """

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self._open_desk(AuditRecord(incident_id=workflow.info().workflow_id, started_at=workflow.now()))
        self._statuses: dict[str, str] = {}
        self._raised_by: list[str] = []  # why a model's diagnosis needs people (agent_answer.model_reasons)
        self._acted_on: list[str] | None = None  # the targets the governor reserved for this incident
        self._reserved: Reserved | None = None  # an automatic decision's reservation, not yet used
        self._unconfirmed: list[str] = []  # the model failed: the rules' proposal needs a person
        self._observe(inp.alerts)

    # --- the runbook ------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: IncidentInput) -> AuditRecord:
        try:
            await self._handle()
        except ActivityError as exc:
            await self._finish("failed", f"{_activity_name(exc)} failed: {cause_text(exc)}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._audit

    async def _handle(self) -> None:
        self._snapshot = await workflow.execute_activity(
            load_policy, LoadPolicy(label_sets=[a.labels for a in self._audit.alerts]), start_to_close_timeout=POLICY_TIMEOUT, heartbeat_timeout=POLICY_HEARTBEAT, retry_policy=READ_RETRY,
            summary="load the whitelist",
        )
        self._audit.whitelist_sha256 = self._snapshot.sha256
        self._audit.whitelist_source = self._snapshot.source
        self._audit.matched_entries = self._matched_entries()
        if self._snapshot.search_attributes:
            self._upsert(search.SERVICE.value_set(search.service_of(self._audit.alerts[0].labels)))

        diagnosis = await self._diagnose()
        if self._audit.resolved:
            return await self._finish("resolved_without_action", "the alerts resolved during diagnosis")
        entry = self._accepted_proposal(diagnosis)
        if entry is None:
            await self._escalate(f"no whitelisted remedy: {self._audit.proposal_note}")
            return await self._finish("no_remedy", self._audit.proposal_note)

        if entry.mode == "shadow":
            return await self._shadow(entry, diagnosis)
        decision = await self._decide(entry, diagnosis)
        if decision.kind == "deny":
            await self._escalate(f"the policy refused {entry.id}: {decision.reason}")
            return await self._finish("denied", f"[{decision.rule}] {decision.reason}")
        while True:  # again whenever the governor raises the tier between decision and act
            if self._audit.decision.kind == "needs_approval":
                if not self._audit.earlier_decisions:  # once, with the first request
                    await self._maybe_drill()
                verdict = await self._wait_for_approval()
                if verdict != "approved":
                    detail = {
                        "rejected": "rejected by " + ", ".join(e.approver for e in self._audit.approvals if e.kind == "rejected"),
                        "expired": f"no approval within {format_duration(self._settings.expire_after)}; nothing was done",
                        "resolved": "the alerts resolved while waiting for approval",
                    }[verdict]
                    outcome = "resolved_without_action" if verdict == "resolved" else verdict
                    return await self._finish(outcome, detail)
            result = await self._act(entry)
            if result is not RAISED:
                break
        if result is None:
            return
        verification = await self._verify(entry)
        if verification.ok:
            return await self._finish("remediated", result.detail)
        # Never chain a second autonomous action: people take it from here.
        await self._escalate(f"{entry.id} ran but the symptom did not clear")
        await self._finish("verification_failed", "; ".join(f"{c.name}: {c.detail}" for c in verification.checks if not c.ok))

    # --- stages -----------------------------------------------------------------------

    async def _diagnose(self) -> Diagnosis | None:
        self._set_status("diagnosing")
        diagnosis = await workflow.execute_activity(
            diagnose,
            DiagnoseInput(incident_id=self._audit.incident_id, alerts=self._audit.alerts, candidates=self._audit.matched_entries),
            schedule_to_close_timeout=self._settings.diagnose_timeout,
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=READ_RETRY,
            summary="diagnose: read evidence, form hypotheses",
        )
        if self._settings.diagnoser == "llm":
            diagnosis = await self._model_diagnosis(diagnosis)
        self._audit.diagnosis = diagnosis
        return diagnosis

    async def _model_diagnosis(self, rules: Diagnosis) -> Diagnosis:
        """The language model's diagnosis, in a child workflow whose history holds its
        turns and reads. The rules' diagnosis stays beside it in the audit.

        A model that fails (errors, timeouts, an endpoint that does not answer, refused
        answers, a child workflow that fails) never loses the incident: the rules'
        diagnosis stands, and what it proposes needs at least one person, since the model
        could not confirm it (``_unconfirmed``); with no proposal, no remedy, escalated."""
        self._audit.rules_diagnosis = rules
        catalog = self._snapshot.evidence
        self._audit.evidence_sha256 = catalog.sha256 if catalog else None
        bounds = self._settings.agent
        try:
            agent: AgentResult = await workflow.execute_child_workflow(
                DIAGNOSIS_WORKFLOW,
                agent_answer.agent_input(self._audit.incident_id, self._audit.alerts, self._snapshot.whitelist,
                                         self._audit.matched_entries, rules, catalog, bounds),
                id=f"{self._audit.incident_id}/diagnosis", result_type=AgentResult,
                execution_timeout=timedelta(seconds=bounds.time_budget_seconds + bounds.turn_timeout_seconds) + READ_TIMEOUT * 3,
            )
        except ChildWorkflowError as exc:
            agent = AgentResult(note=f"the diagnosis agent failed: {cause_text(exc)}", failed=True)
        self._audit.agent = agent.model_copy(update={"diagnosis": None})  # the diagnosis is recorded once, below
        if agent.diagnosis is not None:
            return agent.diagnosis
        what = "failed" if agent.failed else "gave no valid answer"
        if rules.proposal is not None:
            self._unconfirmed = [f"the model {what} ({agent.note[:300]}), so it could not confirm the rules' "
                                 f"proposal {rules.proposal}"]
        return rules.model_copy(update={"rationale": f"the model {what} ({agent.note[:300]}); the rules' diagnosis "
                                                     f"stands: {rules.rationale}"})

    def _accepted_proposal(self, diagnosis: Diagnosis):
        """The proposed entry, only if the alerts matched it; anything else is recorded and dropped."""
        matched = self._audit.matched_entries
        if diagnosis.proposal is None:
            self._audit.proposal_note = f"the diagnosis proposed no action ({diagnosis.rationale})"
            return None
        if diagnosis.proposal not in matched:
            self._audit.proposal_note = (
                f"the diagnosis proposed {diagnosis.proposal!r}, which is not among the entries the alerts "
                f"matched ({', '.join(matched) or 'none'}); treated as no whitelisted remedy"
            )
            return None
        self._audit.proposal_note = f"proposal {diagnosis.proposal!r} is among the matched entries"
        return self._snapshot.whitelist.entry(diagnosis.proposal)

    async def _decide(self, entry, diagnosis: Diagnosis):
        self._set_status("deciding")
        request = build_request(entry, self._audit.alerts, diagnosis)
        if KINDS[entry.kind].reads_first:
            request, nothing = await self._read_first(entry, diagnosis)
            if nothing:  # nothing to ask the policy: recorded as a denial by the target rule
                self._audit.request, self._audit.decision = request, Decision.deny(entry.id, "target", nothing)
                metrics.decided(self._audit, workflow.now())
                return self._audit.decision
        # Whatever the model says, authority does not move: a proposal that differs from the
        # rules', or parameters it chose, need at least one person whatever the tier. The
        # governor is told, so such a request never claims autonomy on its way to people.
        reasons = self._raised_by = (agent_answer.model_reasons(self._audit.rules_diagnosis, diagnosis) + self._unconfirmed
                                     if self._settings.diagnoser == "llm" and self._audit.rules_diagnosis is not None else [])
        assessed = await self._governor(assess_action, self._assessment(request, AssessInput, raised_by=reasons),
                                        f"decide {entry.id} at the governor (tier, limits, autonomy)")
        decision, self._reserved = assessed.decision, assessed.reserved
        self._audit.request, self._audit.decision = request, decision
        if assessed.reserved is not None:
            self._audit.reserved_under_sha256 = assessed.reserved.whitelist_sha256
        metrics.decided(self._audit, workflow.now())
        self._upsert(search.ENTRY.value_set(search.fit(entry.id)), search.BLAST_RADIUS.value_set(search.fit(entry.blast_radius)))
        return decision

    async def _read_first(self, entry, diagnosis: Diagnosis):
        """The request for a kind whose parameters the workflow reads itself (the capacity,
        the instances' tags), and why there is nothing to ask when the read says so."""
        request = requests.first_request(entry, self._audit.alerts, diagnosis)
        self._audit.observed = await workflow.execute_activity(
            read_world, request, start_to_close_timeout=READ_TIMEOUT, retry_policy=WORLD_READ_RETRY,
            heartbeat_timeout=self._settings.heartbeat_timeout,
            summary=f"read {entry.kind} target before deciding",
        )
        return requests.completed_request(entry, request, self._audit.observed)

    async def _shadow(self, entry, diagnosis: Diagnosis) -> None:
        """A shadow entry: decide with the pure policy (the declared tier, target and bounds;
        the governor is not asked, so nothing is claimed or reserved), record what would
        have run and whose approval it needed, page nobody, execute nothing."""
        self._set_status("deciding")
        request, nothing = build_request(entry, self._audit.alerts, diagnosis), None
        if KINDS[entry.kind].reads_first:  # read-only, as for an active entry
            request, nothing = await self._read_first(entry, diagnosis)
        decision = (Decision.deny(entry.id, "target", nothing) if nothing
                    else decide(self._snapshot.whitelist, request, [], workflow.now()))
        self._audit.request, self._audit.decision = request, decision
        if decision.kind == "deny":
            would = f"would have been denied: [{decision.rule}] {decision.reason}"
        elif decision.kind == "auto":
            would = f"would have run {entry.id} on {attest.confirmation_text(request)} by itself ({decision.tier} tier)"
        else:
            would = (f"would have run {entry.id} on {attest.confirmation_text(request)} after {decision.approvals} "
                     f"approval(s) from {', '.join(decision.approvers)} ({decision.tier} tier)")
        self._audit.outcome, self._audit.outcome_detail = "shadowed", f"shadow entry: {would}; nothing was executed"
        self._set_status("done", search.OUTCOME.value_set("shadowed"))
        self._audit.ended_at = workflow.now()
        metrics.ended(self._audit)

    async def _maybe_drill(self) -> None:
        """At the whitelist's drill rate, start a drill beside this approval request.

        The drill is a workflow of its own (``workflows/drill.py``) that outlives this one;
        nothing about it changes what this incident does."""
        rate = self._snapshot.whitelist.drills.rate
        if rate <= 0 or workflow.random().random() >= rate:
            return
        a = self._audit
        chosen = drill.wrong_proposal(self._snapshot, a.alerts, a.matched_entries, workflow.random().random(), workflow.now())
        if chosen is None:
            return
        request, decision, why = chosen
        try:
            await workflow.start_child_workflow(
                DRILL_WORKFLOW,
                drill.DrillInput(of_incident=a.incident_id, alerts=a.alerts, matched_entries=a.matched_entries,
                                 diagnosis=a.diagnosis, rules_diagnosis=a.rules_diagnosis, snapshot=self._snapshot,
                                 request=request, decision=decision, why_wrong=why),
                id=drill.drill_id(a.incident_id, workflow.uuid4().hex),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=search.summary_of(a.alerts[0].labels, a.alerts[0].annotations),
            )
        except Exception as exc:  # a drill that cannot start must never hold up the incident
            workflow.logger.warning("drill not started: %s", exc)

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
            if _error_type(exc) != BRAKED:
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
        return f"{self._audit.incident_id}/act/{entry_id}"  # one execution per incident and entry

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

    async def _finish(self, outcome: str, detail: str) -> None:
        self._audit.outcome = outcome
        self._audit.outcome_detail = detail
        if self._acted_on is not None and outcome in ("verification_failed", "failed"):
            # Failure memory and the breaker: the next incident for these targets asks people.
            try:
                await self._governor(record_outcome, Outcome(entry_id=self._audit.request.entry_id, targets=self._acted_on,
                                                               incident_id=self._audit.incident_id, outcome=outcome),
                                     f"tell the governor: {outcome}")
            except ActivityError as exc:  # the outcome stands; say that the governor did not hear it
                self._audit.outcome_detail += f" (the governor was not told: {cause_text(exc)})"
        self._set_status("done", search.OUTCOME.value_set(outcome))  # one visibility write, not two
        # Counted now, in a workflow task that schedules the notification, not in the last one,
        # which completes the workflow: the server refuses that completion when an event came
        # in meanwhile (a signal, this incident's drill ending), and the task that then runs
        # again is not a replay, so whatever it recorded would be counted twice.
        metrics.ended(self._audit)
        answers = "; ".join(f"{e.kind} by {e.approver} via {e.channel}" + ("" if e.verified else " (not verified)")
                            + (f" (fast: {e.after_seconds:.0f}s after the request)" if e.fast else "")
                            for e in self._audit.approvals)
        await self._notify("outcome", f"{outcome}: {detail}", {"approvals": answers} if answers else None)
        self._audit.ended_at = workflow.now()

    # --- observe ----------------------------------------------------------------------

    def _observe(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            if alert in self._audit.alerts:
                continue  # a retried delivery of the same alert
            self._statuses[alert.fingerprint] = alert.status
            if len(self._audit.alerts) >= MAX_RECORDED_ALERTS:
                # A storm must not grow the audit record without bound; the signals in
                # history still hold every alert.
                self._audit.alerts_not_recorded += 1
                continue
            self._audit.alerts.append(alert)
        if self._statuses and all(s == "resolved" for s in self._statuses.values()):
            self._audit.resolved = True

    def _matched_entries(self) -> list[str]:
        matched: list[str] = []
        for alert in self._audit.alerts:
            for entry_id in matching_entries(self._snapshot.whitelist, alert.labels):
                if entry_id not in matched:
                    matched.append(entry_id)
        return matched

    @workflow.signal(name=Incident.ALERTS)
    def alerts(self, batch: AlertBatch) -> None:
        self._observe(batch.alerts)

    @workflow.signal(name=Incident.RESOLVED)
    def resolved(self) -> None:
        self._audit.resolved = True

    def _assessment(self, request, model, **extra):
        return model(whitelist_sha256=self._snapshot.sha256, policy=self._snapshot.whitelist.for_entry(request.entry_id),
                     request=request, incident_id=self._audit.incident_id, idempotency_key=self._key(request.entry_id),
                     **extra)

    async def _governor(self, activity, arg, summary: str):
        return await workflow.execute_activity(
            activity, arg, start_to_close_timeout=RESERVE_TIMEOUT, heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=GOVERNOR_RETRY, summary=summary,
        )

def _error_type(exc: ActivityError) -> str | None:
    cause = exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _activity_name(exc: ActivityError) -> str:
    return getattr(exc, "activity_type", None) or "an activity"
