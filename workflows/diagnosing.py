"""The diagnose stage of an incident: the rules' diagnosis, the model's beside it (a child
workflow), and which proposal stands. A part of ``IncidentWorkflow`` (``incident.py``),
kept apart so each stage reads on its own; it uses the incident's record, snapshot and
settings."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from selfheal import search
    from selfheal.contract import AgentResult, DiagnoseInput, Diagnosis
    from selfheal.contract.activities import diagnose
    from selfheal.contract.workflows import DIAGNOSIS_WORKFLOW
    from selfheal.workflows import agent_answer
    from selfheal.workflows.approval_desk import ApprovalDesk
    from selfheal.workflows.causes import cause_text
    from selfheal.workflows.timeouts import READ_RETRY, READ_TIMEOUT


class Diagnosing(ApprovalDesk):
    _unconfirmed: list[str]  # the model failed: the rules' proposal needs a person

    async def _diagnose(self) -> Diagnosis | None:
        self._set_status(search.FIRST_STATUS)  # the stage the ingress started the incident with
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
