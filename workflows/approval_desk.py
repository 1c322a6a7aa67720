"""What an incident and a drill share: asking people, hearing their answers, the record.

``ApprovalDesk`` holds the approval request (notification, reminders, expiry), the
handlers that judge approvals and rejections (updates and signals), the evidence-viewed
signal, the ``audit`` and ``status`` queries, and search attributes; telling people is
``Notifying``'s (``notifying.py``). The incident workflow adds the runbook to it; the
drill workflow adds nothing that acts, so a drill is presented exactly as an incident
is, through the same code.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal import search
    from selfheal.identity import attest
    from selfheal.contract import Approval, ApprovalEvent, AuditRecord, EvidenceView, Rejection, Viewing
    from selfheal.contract import IncidentSettings, PolicySnapshot
    from selfheal.contract.workflows import Incident
    from selfheal.workflows import approvals, metrics, ui_details
    from selfheal.workflows.notifying import Notifying

# SelfhealStatus is written at the stages people filter incidents by. The others last
# seconds, and the `status` query and the current details show them; each write is a
# command and a visibility update, 12% of an approved incident's time from approval to
# outcome (bench/approve_many.py).
FILTERED_STATUSES = frozenset({search.FIRST_STATUS, "awaiting_approval", "done"})  # the first: diagnosing
# The stages a query can already show as awaiting_approval (see "About to be" below): the
# first request comes at the end of deciding, a tier raised at the reservation at acting.
ABOUT_TO_ASK = frozenset({"deciding", "acting"})
ANSWERABLE = ABOUT_TO_ASK | {"awaiting_approval"}  # the validator admits answers at these
MAX_RECORDED_REFUSALS = 100
# Refusals the audit keeps per name (a person, "slack:TEAM:USER", or whatever was typed):
# one identity clicking on and on cannot crowd out everyone else's. Ten, not fewer: a
# person may well fumble a few times (a wrong confirmation, an expired statement, a typed
# name) before their approval counts, and each of those belongs in the review.
MAX_REFUSALS_PER_IDENTITY = 10


class ApprovalDesk(Notifying):
    """Mixed into a workflow class; ``_open_desk`` must run in its ``__init__``."""

    COUNTS_APPROVALS = True  # in selfheal_approval_seconds and the rubber-stamp counter

    _audit: AuditRecord
    _snapshot: PolicySnapshot | None

    def _open_desk(self, audit: AuditRecord) -> None:
        self._audit = audit
        self._snapshot = None
        self._open_notifications()
        self._rejected = False
        self._approved_by: list[str] = []
        self._nonces: set[str] = set()  # signed statements already used here
        self._origins: set[str] = set()  # ingress requests (a Slack click, a token request) already used here
        self._asked_at = None
        self._unsaid: list = []  # search attributes written with the next write, not on their own

    async def _wait_for_approval(self) -> str:
        self._asked_at = workflow.now()
        self._set_status("awaiting_approval")
        decision = self._audit.decision
        self._notify("approval_requested", f"{decision.entry_id} needs {decision.approvals} approval(s) from {', '.join(decision.approvers)}",
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
                self._notify(notice, f"{decision.entry_id} still waits for approval ({notice})", next_level=True)
        if self._rejected:
            return "rejected"
        if len(self._approved_by) >= decision.approvals:
            return "approved"
        return "resolved"

    async def _escalate(self, summary: str) -> None:
        self._notify("escalation", summary)

    # --- approvals ----------------------------------------------------------------------
    # Temporal keeps no trace of an update its validator rejects, and every refused
    # approval must be in the audit trail. So the validator only turns away updates when
    # nothing is or is about to be waiting for approval; who may approve is checked in the
    # handler, which records the refusal and fails the update with the reason.
    #
    # "About to be": a query can answer from events no workflow task has handled yet, so
    # `selfheal status`, the UI and the ingress can see awaiting_approval while this
    # workflow, when the answer reaches it, is still deciding (or acting, for a tier raised
    # at the reservation); the answer's update runs before the events that get there. It
    # is held until the incident moves on, then judged: taken if it asks, refused (and
    # recorded) if it does not.

    @workflow.update(name=Incident.APPROVE)
    async def approve(self, raw: Any = None) -> str:
        await self._until_asked()
        return self._answer(raw, rejecting=False, via="update")

    @approve.validator
    def _approve_while_waiting(self, raw: Any = None) -> None:
        self._require_waiting()

    @workflow.update(name=Incident.REJECT)
    async def reject(self, raw: Any = None) -> str:
        await self._until_asked()
        return self._answer(raw, rejecting=True, via="update")

    @reject.validator
    def _reject_while_waiting(self, raw: Any = None) -> None:
        self._require_waiting()

    async def _until_asked(self) -> None:
        if self._audit.status in ABOUT_TO_ASK:
            await workflow.wait_condition(lambda: self._audit.status not in ABOUT_TO_ASK)

    @workflow.signal(name=Incident.APPROVE_SIGNAL)
    async def approve_signal(self, raw: Any = None) -> None:
        await self._until_asked()
        self._answer(raw, rejecting=False, via="signal")

    @workflow.signal(name=Incident.REJECT_SIGNAL)
    async def reject_signal(self, raw: Any = None) -> None:
        await self._until_asked()
        self._answer(raw, rejecting=True, via="signal")

    def _answer(self, raw: Any, rejecting: bool, via: str) -> str:
        """Judge an approval or rejection, record it, and count it if it counts.

        An update that does not count fails with the reason (the caller learns it); a
        signal cannot answer, so its refusal is only recorded.
        """
        message, who, malformed = approvals.decode(raw, Rejection if rejecting else Approval)
        what = "rejection" if rejecting else "approval"
        if malformed is None:
            j = approvals.judge(message, rejecting, self._audit, self._snapshot.whitelist, self._approved_by,
                                workflow.now(), self._nonces, self._origins)
        else:
            j = approvals.Judgement(False, "refused", "unverified", False, malformed)
        if not j.counts:
            note = f"{what} refused: {j.note}" if j.kind == "refused" else j.note
            self._record(j.kind, who, via, note, j.channel, j.verified)
            if via == "update":
                kind = "ApprovalRefused" if j.kind == "refused" else "ApprovalUnverified"
                raise ApplicationError(j.note, type=kind, non_retryable=True)
            return j.note
        self._record(j.kind, message.approver, via, j.note, j.channel, j.verified, j.origin)
        if j.verified:  # someone proven has it in hand: the page is acknowledged
            self._notify("answered", f"{'rejected' if rejecting else 'approved'} by {message.approver} via {j.channel}")
        if rejecting:
            self._rejected = True
            return f"rejected by {message.approver}"
        self._approved_by.append(message.approver)
        return f"approved by {message.approver} ({len(self._approved_by)} of {self._audit.decision.approvals})"

    @workflow.signal(name=Incident.EVIDENCE_VIEWED)
    def evidence_viewed(self, raw: Any = None) -> None:
        """Someone opened the evidence; recorded, and noted on their later approval."""
        message, who, malformed = approvals.decode(raw, Viewing, who_field="person")
        if malformed or len(self._audit.evidence_views) >= MAX_RECORDED_REFUSALS or self._snapshot is None:
            return
        verified = approvals.viewing_proven(message, self._audit, self._snapshot.whitelist, workflow.now())
        self._audit.evidence_views.append(EvidenceView(person=message.person, at=workflow.now(),
                                                       channel=message.channel or "unverified", verified=verified))

    def _require_waiting(self) -> None:
        if self._audit.status not in ANSWERABLE:
            raise ValueError(f"incident {self._audit.incident_id} is not waiting for approval (status: {self._audit.status})")

    def _record(self, kind: str, who: str, via: str, note: str, channel: str = "unverified", verified: bool = False,
                origin: str | None = None) -> None:
        if kind in ("refused", "unverified"):
            # Anyone who can reach the namespace can send refusals; the history keeps them
            # all, the audit record keeps the first ones (a few per name) and a count.
            refused = [e.approver for e in self._audit.approvals if e.kind in ("refused", "unverified")]
            if len(refused) >= MAX_RECORDED_REFUSALS or refused.count(who) >= MAX_REFUSALS_PER_IDENTITY:
                self._audit.refusals_not_recorded += 1
                return
        after = (workflow.now() - self._asked_at).total_seconds() if self._asked_at else None
        viewed = any(v.person == who and v.verified for v in self._audit.evidence_views)
        # A rubber-stamp signal, recorded and counted in review: it never blocks the approval.
        decision = self._audit.decision
        tier = self._tier(decision.tier if decision else None)
        fast = (kind == "approved" and after is not None and tier is not None
                and after < tier.min_review.total_seconds())
        event = ApprovalEvent(kind=kind, approver=who, at=workflow.now(), via=via, note=note, channel=channel,
                              verified=verified, after_seconds=after, evidence_viewed=viewed, fast=fast, origin=origin)
        self._audit.approvals.append(event)
        if self.COUNTS_APPROVALS:  # a drill's answers are counted as drill verdicts, not approvals
            metrics.answered(event, decision.tier if decision else None, len(self._audit.approvals))

    def _approval_settled(self) -> bool:
        return self._rejected or self._audit.resolved or len(self._approved_by) >= self._audit.decision.approvals

    # --- queries and helpers ---------------------------------------------------------------

    @workflow.query(name=Incident.AUDIT)
    def audit(self) -> AuditRecord:
        return self._audit

    @workflow.query(name=Incident.STATUS)
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
            "service": search.service_of(first.labels) if first else "",
            "approve": "\n".join(ui_details.approve_lines(a.incident_id, d.approvers, self._confirms(d.tier))),
        }

    @property
    def _settings(self) -> IncidentSettings:
        # Before the policy is loaded (an incident that fails that early), the defaults.
        return self._snapshot.settings if self._snapshot is not None else IncidentSettings()

    def _set_status(self, status: str, *also) -> None:
        self._audit.status = status
        # What visibility holds: set at start by the ingress, and kept up to date by the SDK
        # with every upsert (replayed alike), so a status is never written twice in a row.
        held = workflow.info().typed_search_attributes.get(search.STATUS)
        if status in FILTERED_STATUSES and (status != held or also or self._unsaid):
            self._upsert(search.STATUS.value_set(status), *also)
        decision = self._audit.decision
        tier = self._tier(decision.tier if decision else None)
        workflow.set_current_details(ui_details.current_details(self._audit, status, tier.channels if tier else None,
                                                                self._confirms(decision.tier if decision else None)))

    def _tier(self, name: str | None):
        """The incident's own snapshot's tier of that name (None before a decision)."""
        return self._snapshot.whitelist.tiers.get(name) if name and self._snapshot else None

    def _confirms(self, name: str | None) -> bool:
        """Whether that tier of the incident's own snapshot asks an approval to repeat the target."""
        return self._snapshot is not None and self._snapshot.whitelist.confirms(name)

    def _upsert(self, *updates) -> None:
        if self._snapshot is not None and self._snapshot.search_attributes:
            workflow.upsert_search_attributes([*self._unsaid, *updates])
            self._unsaid = []
