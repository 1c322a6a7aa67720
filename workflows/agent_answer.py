"""The model's final answer: its schema, and the checks that keep it inside the candidates.

Pure (the agent workflow imports it). The model may propose only one of the candidate
entry ids, or none; it may give only the parameters the entry's kind defines, with their
types (bounds are the policy's job, and a model-chosen parameter always needs a person);
its hypotheses must cite evidence it actually read. Everything else about the answer is
text for people, bounded in size. Free text never becomes a target, host, file, URL,
command or parameter: nothing here reads one out of it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from selfheal.contract import AgentBounds, AgentInput, Alert, Candidate, Diagnosis, Evidence, EvidenceItem, Hypothesis
from selfheal.contract.kinds import KINDS

SUBMIT = "submit_diagnosis"
READ = "read_evidence"
# What each kind lets a diagnosis choose. Rollbacks and restarts take nothing: the target
# is the entry's; reboots take instances from the alerts, never from a diagnosis.


class _Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: Annotated[str, Field(min_length=1, max_length=500)]
    evidence_ids: list[Annotated[str, Field(max_length=300)]] = Field(default=[], max_length=20)


class ModelAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hypotheses: list[_Hypothesis] = Field(default=[], max_length=5)
    proposal: Annotated[str, Field(max_length=80)] | None = None
    params: dict[Annotated[str, Field(max_length=64)], StrictInt] = {}
    rationale: Annotated[str, Field(max_length=2_000)] = ""
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)


def tool_schemas(candidates: list[Candidate], refs: list[str]) -> list[dict[str, Any]]:
    """The two tools, as JSON schemas: read one configured source by id; submit the answer."""
    return [
        {"name": READ, "description": "Read one evidence source (read-only, bounded). Sources are named by id only.",
         "parameters": {"type": "object", "additionalProperties": False, "required": ["source"],
                        "properties": {"source": {"type": "string", "enum": refs or ["none"]}}}},
        {"name": SUBMIT, "description": "Give the final diagnosis. proposal is one candidate entry id, or null.",
         "parameters": {"type": "object", "additionalProperties": False, "required": ["hypotheses", "proposal", "rationale", "confidence"],
                        "properties": {
                            "hypotheses": {"type": "array", "maxItems": 5, "items": {
                                "type": "object", "additionalProperties": False, "required": ["summary", "evidence_ids"],
                                "properties": {"summary": {"type": "string"},
                                               "evidence_ids": {"type": "array", "items": {"type": "string"}}}}},
                            "proposal": {"type": ["string", "null"], "enum": [c.id for c in candidates] + [None]},
                            "params": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "rationale": {"type": "string"},
                            "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}},
    ]


def parse_text_answer(text: str) -> dict[str, Any] | None:
    """A final answer given as text: one JSON object, perhaps in a ```json fence."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[4:] if body.lower().startswith("json") else body
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def validate(raw: Any, candidates: list[Candidate], evidence: dict[str, EvidenceItem]) -> tuple[ModelAnswer | None, str]:
    """The answer, or why it was refused (said back to the model, and recorded)."""
    if not isinstance(raw, dict):
        return None, "the answer is not a JSON object"
    try:
        answer = ModelAnswer.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:5])
        return None, f"the answer does not fit the schema: {problems}"
    by_id = {c.id: c for c in candidates}
    if answer.proposal is not None and answer.proposal not in by_id:
        return None, (f"proposal {answer.proposal[:80]!r} is not one of the candidates "
                      f"({', '.join(by_id) or 'none'}); propose one of them or null")
    allowed = dict(KINDS[by_id[answer.proposal].kind].model_params) if answer.proposal else {}
    extra = sorted(set(answer.params) - set(allowed))
    if extra:
        return None, f"parameters {extra} are not defined for {answer.proposal or 'no proposal'} (it takes {sorted(allowed) or 'none'})"
    unknown = sorted({i for h in answer.hypotheses for i in h.evidence_ids} - set(evidence))
    if unknown:
        return None, f"cited evidence ids that were never read: {unknown[:5]}"
    return answer, ""


def to_diagnosis(answer: ModelAnswer, evidence: dict[str, EvidenceItem]) -> Diagnosis:
    # The model's text was redacted by the model_turn activity before it entered history.
    hypotheses = []
    for i, h in enumerate(answer.hypotheses):
        cited = [evidence[e] for e in h.evidence_ids]
        lines = [f"[{item.id}] {item.excerpt}" for item in cited]
        sources = sorted({item.source for item in cited}) or ["model"]
        hypotheses.append(Hypothesis(id=f"model-{i + 1}", summary=h.summary,
                                     evidence=[Evidence(source="+".join(sources)[:200], lines=lines)],
                                     proposal=answer.proposal))
    return Diagnosis(hypotheses=hypotheses, proposal=answer.proposal, params=dict(answer.params),
                     rationale=answer.rationale, confidence=answer.confidence)


def model_reasons(rules: Diagnosis, model: Diagnosis) -> list[str]:
    """Why a model's proposal needs at least one approver whatever the tier: it differs
    from the rules' proposal, or it carries parameters the model chose (parameters fixed
    by a reviewed signature for the same proposal do not count)."""
    reasons = []
    if model.proposal != rules.proposal:
        reasons.append(f"the model proposed {model.proposal or 'nothing'}; the rules proposed {rules.proposal or 'nothing'}")
    if model.params and (model.proposal != rules.proposal or model.params != rules.params):
        chosen = ", ".join(f"{k}={v}" for k, v in sorted(model.params.items()))
        reasons.append(f"parameters chosen by the model ({chosen})")
    return reasons


def raised(decision, whitelist, reasons: list[str]):
    """``decision`` needing at least the whitelist's approving tier, for ``reasons``."""
    from selfheal.contract import Decision

    if not reasons or decision.kind == "deny":  # a refusal stays a refusal: raising never allows
        return decision
    if decision.kind == "needs_approval":  # idempotent: the governor may have raised it already
        return decision.model_copy(update={"raised_by": [*decision.raised_by, *(r for r in reasons if r not in decision.raised_by)]})
    tier = whitelist.approving_tier()
    if tier is None:  # no tier asks anyone: nobody could approve, so what the model chose does not run
        return Decision.deny(decision.entry_id, "model", "a model's proposal needs a person, and no tier of this "
                             "whitelist asks for one: " + "; ".join(reasons))
    return Decision.needs_approval(decision.entry_id, tier, whitelist.tiers[tier].approvals,
                                   whitelist.allowed_approvers(decision.entry_id), declared_tier=decision.declared_tier,
                                   raised_by=[*decision.raised_by, *reasons], targets=decision.targets)


EVIDENCE_LOOKBACK = timedelta(minutes=15)  # evidence from this long before the first firing alert


def agent_input(incident_id: str, alerts: list[Alert], whitelist, matched: list[str], rules: Diagnosis, catalog,
                bounds: AgentBounds = AgentBounds()) -> AgentInput:
    """What the agent is given, for the incident workflow and for diagnosis replay alike:
    the matched entries as candidates (no targets), the sources the evidence catalog allows
    for them and for the rules' signatures, and the candidate whose AWS evidence "aws" reads."""
    candidates = [Candidate(id=e.id, kind=e.kind, description=e.description, params=dict(KINDS[e.kind].model_params))
                  for e in (whitelist.entry(i) for i in matched) if e is not None]
    sources = catalog.allowed([c.id for c in candidates] + [h.id for h in rules.hypotheses]) if catalog else []
    firing = [a for a in alerts if a.status == "firing"] or alerts
    return AgentInput(incident_id=incident_id, alerts=alerts[:20], candidates=candidates, sources=sources, rules=rules,
                      since=min(a.starts_at for a in firing) - EVIDENCE_LOOKBACK, bounds=bounds,
                      aws_entry=next((c.id for c in candidates if catalog and "aws" in catalog.allow.get(c.id, [])), None))
