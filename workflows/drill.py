"""Approval drills: a deliberately wrong proposal, presented like any other, that cannot act.

An approval step that is right often enough stops being read. A drill measures whether it
still is: beside a real approval request (``drills.rate`` of them, off by default), the
incident starts a ``DrillWorkflow`` that asks the same people, through the same channels
and the same code (``ApprovalDesk``), to approve an action the alerts do not call for. An
approval is recorded as missed, a rejection as caught, and the approver is told when it
ends.

The drill workflow has no act stage: it runs no activity but ``notify``, asks the governor
nothing (so it reserves nothing and counts toward no limit), and its id looks like an
incident's (``<key>~<12 hex>``). Anyone reading the workflow type in the Temporal UI can
tell, which is how an auditor tells too.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from selfheal import search
    from selfheal.contract import ActionRequest, Alert, AuditRecord, Decision, Diagnosis, DrillRecord
    from selfheal.contract import PolicySnapshot
    from selfheal.whitelist import decide, matching_entries
    from selfheal.workflows import metrics
    from selfheal.workflows.approval_desk import ApprovalDesk
    from selfheal.contract.kinds import KINDS
    from selfheal.contract.workflows import DRILL_WORKFLOW
    from selfheal.workflows.requests import build_request



class DrillInput(BaseModel):
    """Everything a drill shows, chosen by the incident that starts it (from its own policy
    snapshot), so a drill asks nothing of the world and the governor."""

    model_config = ConfigDict(extra="forbid")

    of_incident: str
    alerts: list[Alert]
    matched_entries: list[str]
    diagnosis: Diagnosis | None
    rules_diagnosis: Diagnosis | None = None
    snapshot: PolicySnapshot
    request: ActionRequest
    decision: Decision
    why_wrong: str


def wrong_proposal(snapshot: PolicySnapshot, alerts: list[Alert], matched: list[str], pick: float,
                   now: datetime) -> tuple[ActionRequest, Decision, str] | None:
    """A proposal the alerts do not call for, and why a careful reader would refuse it.

    Candidates are active entries none of the alerts match, whose request the policy
    would send to people (so the drill asks exactly whom a real request for it would ask).
    Kinds whose request needs a read of the world are left out: a drill reads nothing.
    ``pick`` in [0, 1) chooses among them; None when there is no candidate.
    """
    whitelist = snapshot.whitelist
    firing = [a for a in alerts if a.status == "firing"] or alerts
    options = []
    for entry in whitelist.entries:
        if entry.mode != "active" or entry.id in matched or KINDS[entry.kind].reads_first:
            continue
        if any(entry.id in matching_entries(whitelist, a.labels) for a in firing):
            continue
        request = build_request(entry, firing, Diagnosis(proposal=entry.id))
        decision = decide(whitelist, request, [], now)
        if decision.kind == "needs_approval":
            options.append((entry, request, decision))
    if not options:
        return None
    entry, request, decision = options[min(int(pick * len(options)), len(options) - 1)]
    names = sorted({a.labels.get("alertname", "?") for a in firing})
    why = (f"the alerts ({', '.join(names)}) do not match {entry.id} (its matchers: {', '.join(entry.match)}); "
           f"they matched {', '.join(matched) or 'no entry'}")
    return request, decision, why


def drill_id(incident_id: str, suffix: str) -> str:
    """Shaped like an incident id, ``<key>~<episode>``, for the same alert key."""
    return f"{incident_id.rsplit('~', 1)[0]}~{suffix[:12]}"


@workflow.defn(name=DRILL_WORKFLOW)
class DrillWorkflow(ApprovalDesk):
    """A drill: ask for approval of a wrong proposal, record caught or missed, tell people.

    The same messages as an incident's approval stage: updates ``approve``/``reject``,
    signals ``approve_signal``/``reject_signal``/``evidence_viewed``, queries ``audit`` and
    ``status``. The result is the AuditRecord, with ``drill`` filled in at the end.
    """

    COUNTS_APPROVALS = False  # drill answers are drill verdicts (workflows/metrics.py), never approvals

    @workflow.init
    def __init__(self, inp: DrillInput) -> None:
        self._open_desk(AuditRecord(incident_id=workflow.info().workflow_id, started_at=workflow.now(),
                                    alerts=inp.alerts))

    @workflow.run
    async def run(self, inp: DrillInput) -> AuditRecord:
        self._snapshot = inp.snapshot
        a = self._audit
        a.whitelist_sha256, a.whitelist_source = inp.snapshot.sha256, inp.snapshot.source
        a.matched_entries, a.diagnosis, a.rules_diagnosis = inp.matched_entries, inp.diagnosis, inp.rules_diagnosis
        a.request, a.decision = inp.request, inp.decision
        if inp.snapshot.search_attributes:
            entry = inp.snapshot.whitelist.entry(inp.request.entry_id)
            self._upsert(search.SERVICE.value_set(search.service_of(inp.alerts[0].labels)),
                         search.ENTRY.value_set(search.fit(inp.request.entry_id)),
                         *([search.BLAST_RADIUS.value_set(search.fit(entry.blast_radius))] if entry else []))
        verdict = await self._wait_for_approval()
        verdicts = {e.approver: ("missed" if e.kind == "approved" else "caught")
                    for e in a.approvals if e.kind in ("approved", "rejected")}
        outcome, said = {
            "approved": ("drill_missed", "approved by " + ", ".join(p for p, v in verdicts.items() if v == "missed")),
            "rejected": ("drill_caught", "rejected by " + ", ".join(p for p, v in verdicts.items() if v == "caught")),
        }.get(verdict, ("drill_unanswered", "nobody answered before it expired"))
        a.drill = DrillRecord(of_incident=inp.of_incident, proposal=inp.request.entry_id, why_wrong=inp.why_wrong,
                              verdicts=verdicts)
        a.outcome = outcome
        a.outcome_detail = (f"this was an approval drill, not a real request ({said}): {inp.why_wrong}. "
                            f"Nothing was executed; a drill cannot execute.")
        self._set_status("done", search.OUTCOME.value_set(outcome))
        metrics.ended(a)  # before the last workflow task, as IncidentWorkflow._finish says why
        answers = "; ".join(f"{p}: {v}" for p, v in verdicts.items())
        self._notify("outcome", f"{outcome}: {a.outcome_detail}",
                     {"drill": f"the real incident is {inp.of_incident}", **({"approvals": answers} if answers else {})})
        await self._notified()
        a.ended_at = workflow.now()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return a
