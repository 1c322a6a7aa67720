"""``selfheal whitelist test``: the promises a team writes next to its whitelist, checked
like code (as ``promtool test rules`` checks alerting rules).

A cases file names the whitelist and the diagnosis rules it tests (relative to itself) and
a clock (``at``); each case gives alerts, optionally the governor's state, what the world
reads before deciding and the log lines each evidence source returns, and optionally the
diagnosis to assume (otherwise the rules decide). It expects any of: the matched entries,
the proposal, the decision and its rule, the declared and effective tier, the number of
approvals, who may approve, the exact target and parameters.

Everything runs through the real pure code an incident runs: entry matching, the rules'
diagnosis (``RuleDiagnoser``, its lines served from the case), the request builders
(``workflows/requests.py``), and the governor's decision (``workflows/governed.py``), which
the entry governor itself calls. No Temporal, no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from selfheal.activities.diagnose import DiagnosisRules, RuleDiagnoser, Signature, load_rules
from selfheal.contract import Alert, DiagnoseInput, Diagnosis, WorldState
from selfheal.contract.governor import Brake
from selfheal.contract.kinds import KINDS
from selfheal.whitelist import Decision, Execution, Whitelist, load_whitelist, matching_entries
from selfheal.whitelist.durations import NonNegativeDuration
from selfheal.whitelist.reviewed import load_reviewed, read_reviewed
from selfheal.whitelist.vocabulary import Act, Hold
from selfheal.workflows import requests
from selfheal.workflows.governed import governed_decision

CASE_INCIDENT = "whitelist-test"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseAlert(_Strict):
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = {}
    status: Literal["firing", "resolved"] = "firing"
    starts: NonNegativeDuration = timedelta(0)  # how long before the clock it began


class Past(_Strict):
    ago: NonNegativeDuration
    targets: list[str] = []


class PastExecution(Past):
    autonomous: bool = False


class PastFailure(Past):
    outcome: Literal["verification_failed", "failed"] = "verification_failed"


class GovernorState(_Strict):
    """What the proposed entry's governor would hold: its executions, the targets acted on
    alone, recent failures, and what takes autonomy away (an open breaker, a pause)."""

    executions: list[PastExecution] = []
    alone: list[Past] = []
    failures: list[PastFailure] = []
    breaker: str | None = None  # the reason it opened
    paused: str | None = None   # the reason autonomy is paused


class World(_Strict):
    capacity: int | None = Field(default=None, ge=0)  # asg.scale: the group's desired capacity now
    instances: dict[str, dict[str, str]] = {}        # ec2.reboot: each instance's tags


class AssumedDiagnosis(_Strict):
    proposal: str | None
    params: dict[str, Any] = {}


class Expect(_Strict):
    matched: list[str] | None = None
    proposal: str | None = Field(default=None)
    decision: Literal["auto", "needs_approval", "deny", "none"] | None = None  # none: nothing proposed
    rule: str | None = None
    tier: str | None = None
    declared_tier: str | None = None
    approvals: int | None = None
    approvers: list[str] | None = None
    target: dict[str, str] | None = None
    params: dict[str, Any] | None = None


class Case(_Strict):
    name: str
    alerts: list[CaseAlert] = Field(min_length=1)
    governor: GovernorState = GovernorState()
    world: World = World()
    logs: dict[str, list[str]] = {}  # "journal:HOST:UNIT" or "file:PATH" -> the lines it returns
    diagnosis: AssumedDiagnosis | None = None
    expect: Expect


class CasesFile(_Strict):
    whitelist: str
    rules: str | None = None
    at: AwareDatetime
    cases: list[Case] = Field(min_length=1)


class Result(BaseModel):
    name: str
    got: dict[str, Any]
    failures: list[tuple[str, Any, Any]]  # (field, expected, got)

    @property
    def ok(self) -> bool:
        return not self.failures


def load_cases(path: Path) -> CasesFile:
    """The cases file, or ``ReviewedFileError`` with every problem at PATH:LINE."""
    return load_reviewed(read_reviewed(path), CasesFile, path=str(path), what="the whitelist test format")


class _Served(RuleDiagnoser):
    """The rules' diagnosis with each source's lines served from the case."""

    def __init__(self, rules: DiagnosisRules, logs: dict[str, list[str]]):
        super().__init__(rules, runner=None)
        self._logs = logs

    async def read_source(self, sig: Signature, since, cache: dict):
        key = (f"journal:{sig.journal.host}:{sig.journal.unit}" if sig.journal else f"file:{sig.file}" if sig.file else None)
        if key is None:
            return None, []
        return key, self._logs.get(key, [])


def _world(entry, request, world: World) -> WorldState:
    if entry.kind == "asg.scale":
        if world.capacity is None:
            return WorldState(resource=f"asg:{entry.target.group}", facts={"missing": "the case gives no world.capacity"})
        return WorldState(resource=f"asg:{entry.target.group}", facts={"desired_capacity": world.capacity})
    asked = list(request.params.get("instance_ids") or [])
    eligible = [i for i in asked if i in world.instances
                and all(world.instances[i].get(k) == v for k, v in entry.target.tags.items())]
    return WorldState(resource="ec2:instances", facts={"eligible": eligible})


async def run_case(case: Case, whitelist: Whitelist, rules: DiagnosisRules | None, at: datetime) -> Result:
    alerts = [Alert(labels=a.labels, annotations=a.annotations, status=a.status, starts_at=at - a.starts,
                    fingerprint=f"case-{n}") for n, a in enumerate(case.alerts)]
    matched: list[str] = []
    for alert in alerts:
        matched += [e for e in matching_entries(whitelist, alert.labels) if e not in matched]
    if case.diagnosis is not None:
        diagnosis = Diagnosis(proposal=case.diagnosis.proposal, params=case.diagnosis.params)
    elif rules is not None:
        diagnosis = await _Served(rules, case.logs).diagnosis(
            DiagnoseInput(incident_id=CASE_INCIDENT, alerts=alerts, candidates=matched))
    else:
        diagnosis = Diagnosis()
    got: dict[str, Any] = {"matched": matched, "proposal": diagnosis.proposal}
    entry = whitelist.entry(diagnosis.proposal) if diagnosis.proposal in matched else None
    if entry is None:  # nothing proposed, or a proposal the alerts did not match: no remedy
        got["decision"] = "none"
        return _compared(case, got)
    request = requests.build_request(entry, alerts, diagnosis)
    nothing = None
    if KINDS[entry.kind].reads_first:
        first = requests.first_request(entry, alerts, diagnosis)
        request, nothing = requests.completed_request(entry, first, _world(entry, first, case.world))
    if nothing:
        decision = Decision.deny(entry.id, "target", nothing)
    elif entry.mode == "shadow":
        decision = governed_decision(whitelist, request, incident_id=CASE_INCIDENT, now=at, executions=[],
                                     autonomous=[], failures=[])
    else:
        g = case.governor
        decision = governed_decision(
            whitelist.for_entry(entry.id), request, incident_id=CASE_INCIDENT, now=at,
            executions=[Execution(entry_id=entry.id, started_at=at - e.ago, incident_id=f"earlier-{n}", targets=e.targets,
                                  autonomous=e.autonomous) for n, e in enumerate(g.executions)],
            autonomous=[Act(targets=a.targets, at=at - a.ago, incident_id=f"alone-{n}") for n, a in enumerate(g.alone)],
            failures=[Act(targets=f.targets, at=at - f.ago, incident_id=f"failed-{n}", note=f.outcome)
                      for n, f in enumerate(g.failures)],
            brake=Brake(paused=[Hold(by="a person", reason=g.paused, at=at)] if g.paused else [],
                        breaker=Hold(by="the breaker", reason=g.breaker, at=at) if g.breaker else None))
    got |= {"decision": decision.kind, "rule": decision.rule, "tier": decision.tier,
            "declared_tier": decision.declared_tier, "approvals": decision.approvals, "approvers": decision.approvers,
            "target": dict(request.target), "params": dict(request.params)}
    return _compared(case, got)


def _compared(case: Case, got: dict[str, Any]) -> Result:
    wanted = case.expect.model_dump(exclude_unset=True)
    failures = [(field, value, got.get(field)) for field, value in wanted.items()
                if _normal(field, value) != _normal(field, got.get(field))]
    return Result(name=case.name, got=got, failures=failures)


def _normal(field: str, value: Any) -> Any:
    # Who may approve and what matched are sets; the rest compares as written.
    return sorted(value) if field in ("approvers", "matched") and isinstance(value, list) else value


async def run_file(cases: CasesFile, base: Path, whitelist_path: Path | None = None,
                   rules_path: Path | None = None) -> tuple[Path, Path | None, list[Result]]:
    wl_path = whitelist_path or (base / cases.whitelist)
    r_path = rules_path or (base / cases.rules if cases.rules else None)
    whitelist = load_whitelist(wl_path).whitelist
    rules = load_rules(r_path) if r_path else None
    return wl_path, r_path, [await run_case(case, whitelist, rules, cases.at) for case in cases.cases]
