"""IncidentWorkflow: one durable workflow per incident; its id is the incident key."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal import search
    from selfheal.contract import Alert, AlertBatch, AuditRecord, Decision, Diagnosis, IncidentInput, LoadPolicy
    from selfheal.contract.activities import assess_action, load_policy, read_world, record_outcome
    from selfheal.contract.governor import AssessInput, Outcome, Reserved
    from selfheal.contract.kinds import KINDS
    from selfheal.contract.workflows import DRILL_WORKFLOW, FAILED_OUTCOMES, INCIDENT_WORKFLOW, REMEDIATION_FAILED, Incident
    from selfheal.whitelist import decide, matching_entries
    from selfheal.identity import attest
    from selfheal.whitelist.durations import format_duration
    from selfheal.workflows import agent_answer, drill, metrics, requests
    from selfheal.workflows.acting import RAISED, Acting
    from selfheal.workflows.causes import cause_text
    from selfheal.workflows.diagnosing import Diagnosing
    from selfheal.workflows.requests import build_request
    from selfheal.workflows.timeouts import (
        GOVERNOR_RETRY, POLICY_HEARTBEAT, POLICY_TIMEOUT, READ_RETRY, READ_TIMEOUT, RESERVE_TIMEOUT, WORLD_READ_RETRY,
    )


MAX_RECORDED_ALERTS = 200


@workflow.defn(name=INCIDENT_WORKFLOW)
class IncidentWorkflow(Diagnosing, Acting):
    """One incident, from first alert to audit record.

    The diagnose stage is ``Diagnosing`` (``diagnosing.py``), the act and verify stages
    ``Acting`` (``acting.py``), the approval stage ``ApprovalDesk`` (``approval_desk.py``),
    which it shares with drills; this class holds the runbook and the other stages.

    Stages: observe -> diagnose -> decide -> wait (for people, if the tier says so) ->
    act -> verify -> record. The result, and the ``audit`` query, is the AuditRecord; an
    incident whose remediation failed fails, with the AuditRecord as its failure's details
    (``REMEDIATION_FAILED``).

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
            why = f"{_activity_name(exc)} failed: {cause_text(exc)}"
            await self._escalate(why)  # people take it from here
            await self._finish("failed", why)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._audit.outcome in FAILED_OUTCOMES:
            raise ApplicationError(f"{self._audit.outcome}: {self._audit.outcome_detail}", self._audit,
                                   type=REMEDIATION_FAILED, non_retryable=True)
        return self._audit

    async def _handle(self) -> None:
        self._snapshot = await workflow.execute_activity(
            load_policy, LoadPolicy(label_sets=[a.labels for a in self._audit.alerts]), start_to_close_timeout=POLICY_TIMEOUT, heartbeat_timeout=POLICY_HEARTBEAT, retry_policy=READ_RETRY,
            summary="load the whitelist",
        )
        self._audit.whitelist_sha256 = self._snapshot.sha256
        self._audit.whitelist_source = self._snapshot.source
        self._audit.matched_entries = self._matched_entries()
        service = search.service_of(self._audit.alerts[0].labels)
        if self._snapshot.search_attributes and workflow.info().typed_search_attributes.get(search.SERVICE) != service:
            # Not set at start (the ingress sets it): written with the first status, one
            # visibility write rather than two.
            self._unsaid.append(search.SERVICE.value_set(service))

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
        self._notify("outcome", f"{outcome}: {detail}", {"approvals": answers} if answers else None)
        await self._notified()
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

def _activity_name(exc: ActivityError) -> str:
    return getattr(exc, "activity_type", None) or "an activity"
