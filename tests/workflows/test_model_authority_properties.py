"""Property: whatever the model answers, every action that could execute is a whitelist
entry the alert matched, on its own target, within its bounds, and approved as its tier
requires (and by at least one person when the model chose its parameters or disagreed
with the reviewed rules). The pipeline is the workflow's own pure code, end to end: the
answer's validation, the request the workflow builds, the policy, and the raise."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings, strategies as st

from selfheal.contract import Candidate, Diagnosis, WorldState
from selfheal.contract.kinds import KINDS
from selfheal.whitelist import decide, load_whitelist_bytes, matching_entries, target_of
from selfheal.whitelist.policy import check_request
from selfheal.whitelist.vocabulary import GovernorView
from selfheal.workflows import agent_answer, requests
from selfheal.workflows.incident import build_request
from tests.workflows.helpers import alert
from tests.workflows.test_incident_llm import WHITELIST

WL = load_whitelist_bytes(WHITELIST.encode(), "wl.yaml").whitelist
ALERTS = [alert("CheckoutSlow", service="checkout")]
MATCHED = matching_entries(WL, ALERTS[0].labels)
CANDIDATES = [Candidate(id=e, kind=WL.entry(e).kind, params=dict(KINDS[WL.entry(e).kind].model_params))
              for e in MATCHED]
RULES = Diagnosis(proposal="scale-queue-workers", params={"desired_capacity": 4})
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
                      max_leaves=8)
proposals = st.one_of(st.none(), st.sampled_from(["scale-queue-workers", "rollback-checkout", "restart-everything",
                                                  "rm -rf /", "scale-queue-workers; reboot"]), st.text(max_size=40))
params = st.one_of(st.dictionaries(st.sampled_from(["desired_capacity", "current_capacity", "command", "host", "instance_ids"]),
                                   st.one_of(st.integers(-5, 600), values), max_size=3),
                   st.just({"desired_capacity": 4}), st.just({"desired_capacity": 3}))
answers = st.fixed_dictionaries(
    {"proposal": proposals, "params": params},
    optional={"hypotheses": st.lists(st.fixed_dictionaries({"summary": st.text(min_size=1, max_size=50)}), max_size=2),
              "rationale": st.text(max_size=100), "confidence": st.one_of(st.floats(0, 1), values),
              "target": values, "host": st.text(max_size=20), "approved_by": st.lists(st.text(max_size=10), max_size=2)},
)


def request_for(entry, model: Diagnosis):
    """The request the workflow would build: reading the world itself where the kind needs it."""
    if KINDS[entry.kind].reads_first:
        first = requests.first_request(entry, ALERTS, model)
        world = WorldState(resource="asg:demo-queue-workers", facts={"desired_capacity": 2, "min_size": 2, "max_size": 8})
        return requests.completed_request(entry, first, world)[0]
    return build_request(entry, ALERTS, model)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(answers, values))
def test_whatever_the_model_answers_only_whitelisted_bounded_approved_actions_can_run(raw):
    answer, problem = agent_answer.validate(raw, CANDIDATES, {})
    if answer is None:
        assert problem  # refused, and said why: nothing runs from a refused answer
        return
    model = agent_answer.to_diagnosis(answer, {})
    if model.proposal is None:
        return
    entry = WL.entry(model.proposal)
    assert entry is not None and entry.id in MATCHED  # validation keeps it inside the candidates
    request = request_for(entry, model)
    decision = decide(WL, request, [], NOW, GovernorView())
    decision = agent_answer.raised(decision, WL, agent_answer.model_reasons(RULES, model))
    if decision.kind == "deny":
        return
    assert check_request(entry, request) is None           # its own target, within its bounds
    assert request.target == target_of(entry)
    assert decision.approvals >= WL.tiers[entry.blast_radius].approvals
    if model.params and (model.proposal != RULES.proposal or model.params != RULES.params):
        assert decision.kind == "needs_approval" and decision.approvals >= 1
    if model.proposal != RULES.proposal:
        assert decision.kind == "needs_approval" and decision.approvals >= 1
    if decision.kind == "needs_approval":
        assert set(decision.approvers) <= set(WL.allowed_approvers(entry.id))
