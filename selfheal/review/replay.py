"""Diagnosis replay: past incidents' recorded evidence through today's diagnoser, offline.

For each closed incident within the window it reads what the history recorded (the
rules' evidence lines, and every evidence read of the model's agent with its result),
runs the configured diagnoser against that record and nothing else (a read that was never
recorded is answered "not in the record"), and reports what was proposed then, what is
proposed now, and what people decided. It acts on nothing: it starts no workflow and
sends no signal or update; the activities run in-process (``ActivityEnvironment``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.diagnose import RuleDiagnoser, load_rules
from selfheal.activities.runner import CommandResult
from selfheal.contract import (AuditRecord, DiagnoseInput, Diagnosis, EvidenceItem, EvidenceRead,
                             ModelTurn, ModelTurnInput, SourceInfo)
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.workflows import agent_answer
from selfheal.workflows.agent_loop import AgentLoop, TurnFailed
from selfheal.workflows.diagnosis_agent import MODEL_RETRY


def not_recorded(ref: str) -> EvidenceItem:
    return EvidenceItem(id=f"not-recorded:{ref}", source=ref, query="replay",
                        excerpt=f"not in the record: this incident never read {ref}")


async def recorded_reads(client, incident_id: str) -> dict[str, list[EvidenceItem]]:
    """Every ``read_evidence`` of the incident's agent (if it had one): ref -> items."""
    from temporalio.service import RPCError

    try:
        history = await client.get_workflow_handle(f"{incident_id}/diagnosis").fetch_history()
    except RPCError:  # no agent: the rules diagnosed this incident
        return {}
    scheduled: dict[int, str] = {}
    reads: dict[str, list[EvidenceItem]] = {}
    converter = client.data_converter
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "read_evidence":
                [read] = await converter.decode(attrs.input.payloads, [EvidenceRead])
                scheduled[event.event_id] = read.ref
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            if attrs.scheduled_event_id in scheduled:
                [items] = await converter.decode(attrs.result.payloads, [list[EvidenceItem]])
                reads.setdefault(scheduled[attrs.scheduled_event_id], []).extend(items)
    return reads


class RecordedRunner:
    """Answers ``journalctl`` with the lines the incident recorded for that unit; nothing else."""

    def __init__(self, lines: dict[str, list[str]]):
        self._lines = lines

    async def run(self, host, argv, timeout=60.0, privileged=False) -> CommandResult:
        if argv and argv[0] == "journalctl" and f"journal:{host}:{argv[2]}" in self._lines:
            out = "".join(json.dumps({"MESSAGE": line}) + "\n" for line in reversed(self._lines[f"journal:{host}:{argv[2]}"]))
            return CommandResult(tuple(argv), 0, out, "")
        return CommandResult(tuple(argv), 1, "", "not in the record")


class RecordedRules(RuleDiagnoser):
    """The rules diagnoser, reading files from the record instead of the disk."""

    def __init__(self, rules, lines: dict[str, list[str]]):
        super().__init__(rules, RecordedRunner(lines))
        self._lines = lines

    async def _read(self, sig, since, cache):
        if sig.file:
            key = f"file:{sig.file}"
            return key, self._lines.get(key, f"not in the record: this incident never read {key}")
        return await super()._read(sig, since, cache)


class OfflineLoop(AgentLoop):
    def __init__(self, turns, reads: dict[str, list[EvidenceItem]], sleep=asyncio.sleep):
        super().__init__()
        self._turns, self._reads, self._sleep = turns, reads, sleep

    async def turn(self, inp: ModelTurnInput, step: int) -> ModelTurn:
        """A turn as the workflow takes one: retried with the same policy (MODEL_RETRY) on
        what it retries, given up on what it does not; then ``TurnFailed``."""
        policy = MODEL_RETRY
        delay = policy.initial_interval.total_seconds()
        for attempt in range(1, (policy.maximum_attempts or 1) + 1):
            try:
                return await ActivityEnvironment().run(self._turns.model_turn, inp)
            except ApplicationError as exc:
                if exc.non_retryable or exc.type in (policy.non_retryable_error_types or []) \
                        or attempt == policy.maximum_attempts:
                    raise TurnFailed(f"{exc} (attempt {attempt})") from None
                wait = exc.next_retry_delay.total_seconds() if exc.next_retry_delay else delay
                await self._sleep(min(wait, policy.maximum_interval.total_seconds()))
                delay = min(delay * policy.backoff_coefficient, policy.maximum_interval.total_seconds())
        raise TurnFailed("no attempt was made")

    async def read_items(self, ref, entry_id, inp) -> list[EvidenceItem]:
        return self._reads.get(ref) or [not_recorded(ref)]

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


def _proposal(d: Diagnosis | None) -> dict[str, Any]:
    return {"proposal": d.proposal if d else None, "params": dict(d.params) if d else {}}


def people(audit: AuditRecord) -> str:
    said = [f"{e.kind} by {e.approver} via {e.channel}" for e in audit.approvals if e.kind in ("approved", "rejected")]
    if said:
        return "; ".join(said)
    if audit.decision is not None and audit.decision.kind == "auto":
        return "automatic (no one needed)"
    return {"expired": "nobody answered (expired)", "no_remedy": "escalated to people"}.get(audit.outcome or "", "-")


async def replay_one(client, audit: AuditRecord, settings: WorkerSettings, turns, catalog) -> dict[str, Any]:
    then_rules = audit.rules_diagnosis or audit.diagnosis
    lines = {e.source: list(e.lines) for h in (then_rules.hypotheses if then_rules else []) for e in h.evidence}
    reads = await recorded_reads(client, audit.incident_id)
    rules = await ActivityEnvironment().run(RecordedRules(load_rules(settings.diagnosis), lines).diagnose, DiagnoseInput(
        incident_id=audit.incident_id, alerts=audit.alerts, candidates=audit.matched_entries))
    now, note = rules, "rules"
    if settings.incident.diagnoser == "llm" and turns is not None:
        whitelist = load_whitelist(settings.whitelist).whitelist
        inp = agent_answer.agent_input(audit.incident_id, audit.alerts, whitelist, audit.matched_entries, rules, catalog)
        # Sources this incident read stay on offer even if today's configuration dropped them.
        extra = [SourceInfo(ref=ref, kind=ref.split(":")[0]) for ref in reads if ref not in {s.ref for s in inp.sources}]
        result = await OfflineLoop(turns, reads).run(inp.model_copy(update={"sources": [*inp.sources, *extra]}))
        now = result.diagnosis
        note = f"llm: {result.note}; read {', '.join(result.reads) or 'nothing'}"
        if result.failed:  # as in the incident: the rules' diagnosis stands, for people to confirm
            now, note = rules, f"llm FAILED: {result.note}; the rules' diagnosis stands"
    then, later = _proposal(audit.diagnosis), _proposal(now)
    return {
        "incident": audit.incident_id, "started_at": audit.started_at.isoformat() if audit.started_at else None,
        "outcome": audit.outcome, "then": then, "then_rules": _proposal(audit.rules_diagnosis) if audit.rules_diagnosis else None,
        "now": later, "now_by": note, "changed": then != later, "people": people(audit),
        "recorded_reads": {ref: len(items) for ref, items in sorted(reads.items())},  # ref -> items recorded
    }
