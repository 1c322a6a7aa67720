"""IncidentWorkflow: one durable workflow per incident; its id is the incident key."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal.models import (
        ActionRequest,
        Alert,
        AlertBatch,
        Approval,
        ApprovalEvent,
        AuditRecord,
        DiagnoseInput,
        Diagnosis,
        Execution,
        IncidentInput,
        Notification,
        NotificationRecord,
        Rejection,
        RemediationInput,
        RemediationResult,
        UnitState,
        Verification,
        VerifyInput,
        WorldState,
        Check,
        Decision,
        EvidenceView,
        Viewing,
        AgentResult,
    )
    from selfheal import attest, search
    from selfheal.settings import IncidentSettings, PolicySnapshot
    from selfheal.whitelist import decide, matching_entries, target_of
    from selfheal.whitelist.durations import format_duration
    from selfheal.workflows import agent_answer, approvals, requests
    from selfheal.workflows.governor import Assess, Outcome, Reserve, Reserved
    from selfheal.workflows.ledger import Reservation, ReservationResult

# Timeouts and retries. Reads retry freely; writes retry little and never when out of policy.
# Every activity also has a heartbeat timeout (the settings' heartbeat_timeout): a worker
# killed mid-activity is noticed in seconds, not when the start-to-close timeout expires.
POLICY_TIMEOUT = timedelta(seconds=30)
POLICY_HEARTBEAT = timedelta(seconds=5)  # before the settings are known
# The reservation waits out a busy ledger (Temporal admits 10 updates in flight per workflow).
RESERVE_TIMEOUT = timedelta(minutes=30)
READ_TIMEOUT = timedelta(seconds=60)
NOTIFY_TIMEOUT = timedelta(seconds=30)
VERIFY_MARGIN = timedelta(seconds=30)
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1))
# Reading the world right before acting: a host that stays unreachable fails the incident
# with the reason instead of retrying forever.
WORLD_READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=5,
                               non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"])
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
REMEDIATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"],
)
LEDGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)

# Executors by whitelist kind: (baseline reader or None, executor activity name).
EXECUTORS = MappingProxyType({"systemd.restart": ("read_unit_state", "restart_unit")})
# The AWS kinds, read with ``read_world``. Incidents that began before they had executors
# (and so ended "no executor") replay unchanged.
AWS_EXECUTORS = MappingProxyType({
    "ecs.rollback": "rollback_ecs_service", "asg.scale": "scale_asg",
    "ec2.reboot": "reboot_instances", "lambda.rollback": "rollback_lambda_alias",
})
AWS = "aws-executors"

GLOB_CHARS = frozenset("*?[")
# SelfhealStatus is written at the stages people filter incidents by. The others last
# seconds, and the `status` query and the current details show them; each write is a
# command and a visibility update, 12% of an approved incident's time from approval to
# outcome (bench/approve_many.py). Incidents that began before this replay unchanged.
FILTERED_STATUSES = frozenset({"diagnosing", "awaiting_approval", "done"})
FEWER_UPSERTS = "status-upserts-where-filtered"
# Decisions and reservations at the governor instead of the per-entry ledger.
GOVERNED = "governor"
RAISED = object()  # _act's answer when the tier rose and people must decide again
# Approvals count only through a channel that proves the person (selfheal.attest).
VERIFIED_APPROVALS = "verified-approvals"
SLACK_MESSAGE = re.compile(r"slack:([^\s:;]+:[0-9.]+)")
MAX_RECORDED_ALERTS = 200
MAX_RECORDED_REFUSALS = 100


def host_for(selector: str, labels: dict[str, str]) -> str:
    """The concrete host a request names: the selector itself, or the alert's host label.

    The policy checks the result against the selector, so an odd label cannot widen it.
    """
    if not GLOB_CHARS & set(selector):
        return selector
    host = labels.get("host") or labels.get("instance", "").rsplit(":", 1)[0]
    return host if fnmatchcase(host, selector) else ""


def build_request(entry, alerts: list[Alert], diagnosis: Diagnosis) -> ActionRequest:
    target = target_of(entry)
    if entry.kind == "systemd.restart":
        labels = next((a.labels for a in alerts if a.status == "firing"), alerts[0].labels)
        target["host"] = host_for(target["host"], labels)
    return ActionRequest(entry_id=entry.id, target=target, params=diagnosis.params)


@workflow.defn
class IncidentWorkflow:
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
        self._audit = AuditRecord(incident_id=workflow.info().workflow_id, started_at=workflow.now())
        self._statuses: dict[str, str] = {}
        self._snapshot: PolicySnapshot | None = None
        self._rejected = False
        self._approved_by: list[str] = []
        self._governed = False
        self._verified = False  # approvals must prove the person (set when approval is first asked)
        self._nonces: set[str] = set()  # signed statements already used here
        self._asked_at = None
        self._acted_on: list[str] | None = None  # the targets the governor reserved for this incident
        self._observe(inp.alerts)

    # --- the runbook ------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: IncidentInput) -> AuditRecord:
        try:
            await self._handle()
        except ActivityError as exc:
            await self._finish("failed", f"{_activity_name(exc)} failed: {_cause(exc)}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._audit

    async def _handle(self) -> None:
        self._snapshot = await workflow.execute_activity(
            "load_policy", start_to_close_timeout=POLICY_TIMEOUT, heartbeat_timeout=POLICY_HEARTBEAT, retry_policy=READ_RETRY,
            result_type=PolicySnapshot, summary="load the whitelist",
        )
        self._audit.whitelist_sha256 = self._snapshot.sha256
        self._audit.whitelist_source = self._snapshot.source
        self._audit.matched_entries = self._matched_entries()
        # Patched: incidents that started before the workflow set the service itself must replay unchanged.
        if self._snapshot.search_attributes and workflow.patched("workflow-sets-service"):
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
            "diagnose",
            DiagnoseInput(incident_id=self._audit.incident_id, alerts=self._audit.alerts, candidates=self._audit.matched_entries),
            schedule_to_close_timeout=self._settings.diagnose_timeout,
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=READ_RETRY,
            result_type=Diagnosis,
            summary="diagnose: read evidence, form hypotheses",
        )
        if self._settings.diagnoser == "llm":
            diagnosis = await self._model_diagnosis(diagnosis)
        self._audit.diagnosis = diagnosis
        return diagnosis

    async def _model_diagnosis(self, rules: Diagnosis) -> Diagnosis:
        """The language model's diagnosis, in a child workflow whose history holds its
        turns and reads. The rules' diagnosis stays beside it in the audit; without a
        valid answer, people decide, with the evidence and the rules' diagnosis."""
        self._audit.rules_diagnosis = rules
        catalog = self._snapshot.evidence
        self._audit.evidence_sha256 = catalog.sha256 if catalog else None
        agent: AgentResult = await workflow.execute_child_workflow(
            "DiagnosisAgentWorkflow",
            agent_answer.agent_input(self._audit.incident_id, self._audit.alerts, self._snapshot.whitelist,
                                     self._audit.matched_entries, rules, catalog, self._settings.agent),
            id=f"{self._audit.incident_id}/diagnosis", result_type=AgentResult,
            execution_timeout=timedelta(seconds=self._settings.agent.time_budget_seconds) + READ_TIMEOUT * 3,
        )
        self._audit.agent = agent.model_copy(update={"diagnosis": None})  # the diagnosis is recorded once, below
        if agent.diagnosis is not None:
            return agent.diagnosis
        return Diagnosis(hypotheses=rules.hypotheses, proposal=None,
                         rationale=(f"the model gave no valid answer ({agent.note}); people decide. The rules "
                                    f"proposed {rules.proposal or 'nothing'}: {rules.rationale}"))

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
        if entry.kind in requests.READS_FIRST and workflow.patched(AWS):
            request, nothing = await self._read_first(entry, diagnosis)
            if nothing:  # nothing to ask the policy: recorded as a denial by the target rule
                self._audit.request, self._audit.decision = request, Decision.deny(entry.id, "target", nothing)
                return self._audit.decision
        # Patched, and remembered: an incident decided before the governor existed keeps the
        # per-entry ledger to the end, even on a worker that has the governor.
        self._governed = workflow.patched(GOVERNED)
        if self._governed:
            decision = await self._governor("assess_action", self._assessment(request, Assess), Decision,
                                            f"decide {entry.id} at the governor (tier, limits, autonomy)")
        else:
            history = await workflow.execute_activity(
                "read_executions", entry.id, start_to_close_timeout=READ_TIMEOUT, retry_policy=READ_RETRY,
                heartbeat_timeout=self._settings.heartbeat_timeout,
                result_type=list[Execution], summary=f"read recent executions of {entry.id}",
            )
            decision = decide(self._snapshot.whitelist, request, history, workflow.now())
        if self._settings.diagnoser == "llm" and self._audit.rules_diagnosis is not None:
            # Whatever the model says, authority does not move: a proposal that differs from
            # the rules', or parameters it chose, need at least one person whatever the tier.
            decision = agent_answer.raised(decision, self._snapshot.whitelist,
                                           agent_answer.model_reasons(self._audit.rules_diagnosis, diagnosis))
        self._audit.request, self._audit.decision = request, decision
        self._upsert(search.ENTRY.value_set(search.fit(entry.id)), search.BLAST_RADIUS.value_set(search.fit(entry.blast_radius)))
        return decision

    async def _read_first(self, entry, diagnosis: Diagnosis):
        """The request for a kind whose parameters the workflow reads itself (the capacity,
        the instances' tags), and why there is nothing to ask when the read says so."""
        request = requests.first_request(entry, self._audit.alerts, diagnosis)
        self._audit.observed = await workflow.execute_activity(
            "read_world", request, start_to_close_timeout=READ_TIMEOUT, retry_policy=WORLD_READ_RETRY,
            heartbeat_timeout=self._settings.heartbeat_timeout, result_type=WorldState,
            summary=f"read {entry.kind} target before deciding",
        )
        return requests.completed_request(entry, request, self._audit.observed)

    async def _shadow(self, entry, diagnosis: Diagnosis) -> None:
        """A shadow entry: decide with the pure policy (the declared tier, target and bounds;
        the governor is not asked, so nothing is claimed or reserved), record what would
        have run and whose approval it needed, page nobody, execute nothing."""
        self._set_status("deciding")
        request, nothing = build_request(entry, self._audit.alerts, diagnosis), None
        if entry.kind in requests.READS_FIRST:  # read-only, as for an active entry
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

    async def _wait_for_approval(self) -> str:
        # Patched: incidents that waited before approvals were verified keep counting typed names.
        self._verified = self._verified or workflow.patched(VERIFIED_APPROVALS)
        self._asked_at = workflow.now()
        self._set_status("awaiting_approval")
        decision = self._audit.decision
        await self._notify("approval_requested", f"{decision.entry_id} needs {decision.approvals} approval(s) from {', '.join(decision.approvers)}",
                           self._request_details())
        began = workflow.now()
        s = self._settings
        for after, notice in ((s.remind_after, "reminder"), (s.escalate_after, "escalation"), (s.expire_after, None)):
            remaining = (began + after - workflow.now()).total_seconds()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                await workflow.wait_condition(self._approval_settled, timeout=remaining)
                break
            except asyncio.TimeoutError:
                if notice is None:
                    return "expired"
                await self._notify(notice, f"{decision.entry_id} still waits for approval ({notice})")
        if self._rejected:
            return "rejected"
        if len(self._approved_by) >= decision.approvals:
            return "approved"
        return "resolved"

    async def _act(self, entry) -> RemediationResult | None:
        self._set_status("acting")
        aws = entry.kind in AWS_EXECUTORS and workflow.patched(AWS)
        if entry.kind not in EXECUTORS and not aws:
            await self._finish("failed", f"this worker has no executor for {entry.kind}")
            return None
        key = f"{self._audit.incident_id}/act/{entry.id}"
        if self._governed:
            reserved = await self._governor(
                "reserve_action", self._assessment(self._audit.request, Reserve, idempotency_key=key,
                                                   approved_by=list(self._approved_by)),
                Reserved, f"decide {entry.id} again and reserve it at the governor")
            if not reserved.granted and reserved.decision.kind == "needs_approval":
                # The tier rose since the decision (a pause, a breaker, other targets acted
                # on): people decide again; the approvals already given still count.
                self._audit.earlier_decisions.append(self._audit.decision)
                self._audit.decision = reserved.decision
                await self._escalate(f"{entry.id} now needs {reserved.decision}")
                return RAISED
            if not reserved.granted:
                decision = reserved.decision
                await self._escalate(f"{entry.id} was allowed but hit [{decision.rule}] before it could run")
                await self._finish("denied", f"[{decision.rule}] {decision.reason}")
                return None
            self._acted_on = reserved.decision.targets
        else:
            reservation = await workflow.execute_activity(
                "reserve_execution",
                Reservation(entry_id=entry.id, incident_id=self._audit.incident_id, idempotency_key=key,
                            rate_limit=entry.rate_limit, cooldown=entry.cooldown),
                start_to_close_timeout=RESERVE_TIMEOUT, heartbeat_timeout=self._settings.heartbeat_timeout,
                retry_policy=LEDGER_RETRY, result_type=ReservationResult,
                summary=f"reserve an execution of {entry.id} (rate limit, cooldown)",
            )
            if not reservation.granted:
                await self._escalate(f"{entry.id} was allowed but hit [{reservation.rule}] before it could run")
                await self._finish("denied", f"[{reservation.rule}] {reservation.reason}")
                return None
        baseline_activity, executor = ("read_world", AWS_EXECUTORS[entry.kind]) if aws else EXECUTORS[entry.kind]
        baseline = await workflow.execute_activity(
            baseline_activity, self._audit.request, start_to_close_timeout=READ_TIMEOUT, retry_policy=WORLD_READ_RETRY,
            heartbeat_timeout=self._settings.heartbeat_timeout,
            result_type=WorldState if aws else UnitState, summary="read the world before acting",
        )
        result = await workflow.execute_activity(
            executor,
            RemediationInput(incident_id=self._audit.incident_id, idempotency_key=key,
                             whitelist_sha256=self._snapshot.sha256, request=self._audit.request, baseline=baseline),
            start_to_close_timeout=self._settings.remediation_timeout,
            heartbeat_timeout=self._settings.remediation_heartbeat,
            retry_policy=REMEDIATION_RETRY,
            result_type=RemediationResult,
            summary=f"{entry.kind} {entry.id}",
        )
        self._audit.remediation = result
        if result.action == "world_changed":
            await self._escalate(f"{entry.id} did not run: {result.detail}")
            await self._finish("world_changed", result.detail)
            return None
        return result

    async def _verify(self, entry) -> Verification:
        self._set_status("verifying")
        timeout = entry.verify.timeout
        verification = await workflow.execute_activity(
            "verify_remediation",
            VerifyInput(incident_id=self._audit.incident_id, request=self._audit.request, timeout_seconds=timeout.total_seconds()),
            start_to_close_timeout=timeout + VERIFY_MARGIN, heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=READ_RETRY,
            result_type=Verification, summary=f"verify {entry.id}",
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
                await self._governor("record_outcome", Outcome(entry_id=self._audit.request.entry_id, targets=self._acted_on,
                                                               incident_id=self._audit.incident_id, outcome=outcome),
                                     str, f"tell the governor: {outcome}")
            except ActivityError as exc:  # the outcome stands; say that the governor did not hear it
                self._audit.outcome_detail += f" (the governor was not told: {_cause(exc)})"
        if workflow.patched(FEWER_UPSERTS):
            self._set_status("done", search.OUTCOME.value_set(outcome))  # one visibility write, not two
        else:
            self._upsert(search.OUTCOME.value_set(outcome))
            self._set_status("done")
        answers = "; ".join(f"{e.kind} by {e.approver} via {e.channel}" + ("" if e.verified else " (not verified)")
                            + (f" (fast: {e.after_seconds:.0f}s after the request)" if e.fast else "")
                            for e in self._audit.approvals)
        await self._notify("outcome", f"{outcome}: {detail}", {"approvals": answers} if answers else None)
        self._audit.ended_at = workflow.now()

    async def _escalate(self, summary: str) -> None:
        await self._notify("escalation", summary)

    async def _notify(self, kind: str, summary: str, details: dict[str, str] | None = None) -> None:
        if kind == "outcome":
            # The Slack message of the approval request, to update with the outcome.
            posted = [m for n in self._audit.notifications if n.kind == "approval_requested"
                      for m in SLACK_MESSAGE.findall(n.detail)]
            details = {**(details or {}), **({"slack_message": posted[-1]} if posted else {})}
        note = Notification(incident_id=self._audit.incident_id, kind=kind, summary=summary, details=details or {})
        try:
            detail = await workflow.execute_activity(
                "notify", note, start_to_close_timeout=NOTIFY_TIMEOUT, heartbeat_timeout=self._settings.heartbeat_timeout,
                retry_policy=NOTIFY_RETRY,
                result_type=str, summary=f"notify: {kind}",
            )
            delivered = True
        except ActivityError as exc:
            detail, delivered = f"not delivered: {_cause(exc)}", False
        self._audit.notifications.append(NotificationRecord(kind=kind, at=workflow.now(), delivered=delivered, detail=detail))

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

    @workflow.signal
    def alerts(self, batch: AlertBatch) -> None:
        self._observe(batch.alerts)

    @workflow.signal
    def resolved(self) -> None:
        self._audit.resolved = True

    # --- approvals ----------------------------------------------------------------------
    # Temporal keeps no trace of an update its validator rejects, and every refused
    # approval must be in the audit trail. So the validator only turns away updates when
    # nothing is waiting for approval; who may approve is checked in the handler, which
    # records the refusal and fails the update with the reason.

    @workflow.update
    def approve(self, raw: Any = None) -> str:
        return self._answer(raw, rejecting=False, via="update")

    @approve.validator
    def _approve_while_waiting(self, raw: Any = None) -> None:
        self._require_waiting()

    @workflow.update
    def reject(self, raw: Any = None) -> str:
        return self._answer(raw, rejecting=True, via="update")

    @reject.validator
    def _reject_while_waiting(self, raw: Any = None) -> None:
        self._require_waiting()

    @workflow.signal
    def approve_signal(self, raw: Any = None) -> None:
        self._answer(raw, rejecting=False, via="signal")

    @workflow.signal
    def reject_signal(self, raw: Any = None) -> None:
        self._answer(raw, rejecting=True, via="signal")

    def _answer(self, raw: Any, rejecting: bool, via: str) -> str:
        """Judge an approval or rejection, record it, and count it if it counts.

        An update that does not count fails with the reason (the caller learns it); a
        signal cannot answer, so its refusal is only recorded.
        """
        message, who, malformed = approvals.decode(raw, Rejection if rejecting else Approval)
        what = "rejection" if rejecting else "approval"
        if malformed is None and self._verified:
            j = approvals.judge(message, rejecting, self._audit, self._snapshot.whitelist, self._approved_by,
                                workflow.now(), self._nonces)
        else:  # incidents that waited before approvals were verified: a typed name counts
            refused = malformed or approvals.refusal(self._audit, self._approved_by, message.approver, rejecting)
            kind = "refused" if refused else ("rejected" if rejecting else "approved")
            said = message.reason if rejecting and message else (message.comment if message else "")
            j = approvals.Judgement(refused is None, kind, "unverified", False, refused or said)
        if not j.counts:
            note = f"{what} refused: {j.note}" if j.kind == "refused" else j.note
            self._record(j.kind, who, via, note, j.channel, j.verified)
            if via == "update":
                kind = "ApprovalRefused" if j.kind == "refused" else "ApprovalUnverified"
                raise ApplicationError(j.note, type=kind, non_retryable=True)
            return j.note
        self._record(j.kind, message.approver, via, j.note, j.channel, j.verified)
        if rejecting:
            self._rejected = True
            return f"rejected by {message.approver}"
        self._approved_by.append(message.approver)
        return f"approved by {message.approver} ({len(self._approved_by)} of {self._audit.decision.approvals})"

    @workflow.signal
    def evidence_viewed(self, raw: Any = None) -> None:
        """Someone opened the evidence; recorded, and noted on their later approval."""
        message, who, malformed = approvals.decode(raw, Viewing, who_field="person")
        if malformed or len(self._audit.evidence_views) >= MAX_RECORDED_REFUSALS or self._snapshot is None:
            return
        verified = approvals.viewing_proven(message, self._audit, self._snapshot.whitelist, workflow.now())
        self._audit.evidence_views.append(EvidenceView(person=message.person, at=workflow.now(),
                                                       channel=message.channel or "unverified", verified=verified))

    def _require_waiting(self) -> None:
        if self._audit.status != "awaiting_approval":
            raise ValueError(f"incident {self._audit.incident_id} is not waiting for approval (status: {self._audit.status})")

    def _record(self, kind: str, who: str, via: str, note: str, channel: str = "unverified", verified: bool = False) -> None:
        if kind in ("refused", "unverified") and sum(e.kind in ("refused", "unverified") for e in self._audit.approvals) >= MAX_RECORDED_REFUSALS:
            # Anyone who can reach the namespace can send refusals; the history keeps them
            # all, the audit record keeps the first ones and a count.
            self._audit.refusals_not_recorded += 1
            return
        after = (workflow.now() - self._asked_at).total_seconds() if self._asked_at else None
        viewed = any(v.person == who and v.verified for v in self._audit.evidence_views)
        # A rubber-stamp signal, recorded and counted in review: it never blocks the approval.
        decision = self._audit.decision
        tier = self._snapshot.whitelist.tiers.get(decision.tier) if decision and decision.tier and self._snapshot else None
        fast = (kind == "approved" and after is not None and tier is not None
                and after < tier.min_review.total_seconds())
        self._audit.approvals.append(ApprovalEvent(kind=kind, approver=who, at=workflow.now(), via=via, note=note,
                                                   channel=channel, verified=verified, after_seconds=after,
                                                   evidence_viewed=viewed, fast=fast))

    def _approval_settled(self) -> bool:
        return self._rejected or self._audit.resolved or len(self._approved_by) >= self._audit.decision.approvals

    # --- queries and helpers ---------------------------------------------------------------

    @workflow.query
    def audit(self) -> AuditRecord:
        return self._audit

    @workflow.query
    def status(self) -> str:
        return self._audit.status

    def _request_details(self) -> dict[str, str]:
        """What people need to judge an approval request, for chat and webhooks."""
        a, d = self._audit, self._audit.decision
        entry = self._snapshot.whitelist.entry(d.entry_id)
        evidence = []
        if a.diagnosis:
            evidence.append(a.diagnosis.rationale)
            for h in a.diagnosis.hypotheses[:3]:
                lines = [line for ev in h.evidence for line in ev.lines][-3:]
                evidence.append(f"- {h.summary}" + "".join(f"\n    {line[:200]}" for line in lines))
        first = a.alerts[0] if a.alerts else None
        return {
            "entry": d.entry_id,
            "action": f"{entry.kind} ({entry.description or entry.id})" if entry else d.entry_id,
            "target": attest.confirmation_text(a.request),
            "params": ", ".join(f"{k}={v}" for k, v in sorted(a.request.params.items())) if a.request else "",
            "tier": f"{d.tier} ({d.approvals} approval(s))" + (f", raised from {d.declared_tier}" if d.raised_by else ""),
            "raised_by": "; ".join(d.raised_by),
            "approvers": ", ".join(d.approvers),
            **({"rules": f"the rules proposed {a.rules_diagnosis.proposal or 'nothing'}: {a.rules_diagnosis.rationale}"[:500]}
               if a.rules_diagnosis is not None else {}),
            "evidence": "\n".join(evidence)[:2500],
            "summary": (f"{first.labels.get('alertname', '')}: {first.annotations.get('summary', '')}" if first else "")[:500],
        }

    def _assessment(self, request, model, **extra):
        return model(whitelist=self._snapshot.whitelist, whitelist_sha256=self._snapshot.sha256, request=request,
                     incident_id=self._audit.incident_id, **extra)

    async def _governor(self, activity: str, arg, result_type, summary: str):
        return await workflow.execute_activity(
            activity, arg, start_to_close_timeout=RESERVE_TIMEOUT, heartbeat_timeout=self._settings.heartbeat_timeout,
            retry_policy=LEDGER_RETRY, result_type=result_type, summary=summary,
        )

    @property
    def _settings(self) -> IncidentSettings:
        # Before the policy is loaded (an incident that fails that early), the defaults.
        return self._snapshot.settings if self._snapshot is not None else IncidentSettings()

    def _set_status(self, status: str, *also) -> None:
        self._audit.status = status
        if status in FILTERED_STATUSES or not workflow.patched(FEWER_UPSERTS):
            self._upsert(search.STATUS.value_set(status), *also)
        a = self._audit
        lines = [f"**{status}**", f"alerts: {len(a.alerts)} ({'resolved' if a.resolved else 'firing'})"]
        if a.diagnosis:
            lines.append(f"diagnosis: {a.diagnosis.rationale} (confidence {a.diagnosis.confidence:.0%}, for people only)")
        if a.decision:
            lines.append(f"decision: {a.decision}")
        if a.approvals:
            lines.append("approvals: " + ", ".join(f"{e.kind} by {e.approver}" for e in a.approvals))
        if a.remediation:
            lines.append(f"done: {a.remediation.detail}")
        if a.outcome:
            lines.append(f"outcome: {a.outcome}: {a.outcome_detail}")
        workflow.set_current_details("\n\n".join(lines))

    def _upsert(self, *updates) -> None:
        if self._snapshot is not None and self._snapshot.search_attributes:
            workflow.upsert_search_attributes(list(updates))


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def _activity_name(exc: ActivityError) -> str:
    return getattr(exc, "activity_type", None) or "an activity"
