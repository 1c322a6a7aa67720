import inspect
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from selfheal.contract import ActionRequest, Decision, Execution
from selfheal.whitelist import decide, target_of
from selfheal.whitelist.vocabulary import GovernorView

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def request(demo, entry_id, **params):
    return ActionRequest(entry_id=entry_id, target=target_of(demo.entry(entry_id)), params=params)


def systemd_request(host="localhost", **overrides):
    target = {"unit": "selfheal-demo-api.service", "host": host, "scope": "user", **overrides}
    return ActionRequest(entry_id="restart-demo-api", target=target)


def ran(entry_id, ago: timedelta) -> Execution:
    return Execution(entry_id=entry_id, started_at=NOW - ago, incident_id="inc-1")


# --- tiers --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "entry_id, params, kind, approvals",
    [
        ("restart-demo-api", {}, "auto", 0),                                    # instance
        ("rollback-checkout", {}, "needs_approval", 1),                         # service
        ("scale-queue-workers", {"desired_capacity": 4, "current_capacity": 2}, "needs_approval", 2),  # fleet
        ("reboot-batch-hosts", {"instance_ids": ["i-0123456789abcdef0"]}, "needs_approval", 2),        # fleet
        ("rollback-payments-webhook", {}, "needs_approval", 2),                 # region
    ],
)
def test_decision_follows_the_blast_radius_tier(demo, entry_id, params, kind, approvals):
    decision = decide(demo, request(demo, entry_id, **params), [], NOW)
    assert (decision.kind, decision.approvals) == (kind, approvals)
    assert decision.tier == demo.entry(entry_id).blast_radius


def test_needs_approval_lists_people_from_groups_and_names(demo):
    decision = decide(demo, request(demo, "rollback-checkout"), [], NOW)
    assert decision.approvers == ["alice", "bob", "carol", "dave"]
    decision = decide(demo, request(demo, "rollback-payments-webhook"), [], NOW)
    assert decision.approvers == ["alice", "bob", "carol", "dave", "erin"]


# --- unknown entries and targets ------------------------------------------------------

def test_unknown_entry_is_denied(demo):
    decision = decide(demo, ActionRequest(entry_id="delete-database"), [], NOW)
    assert (decision.kind, decision.rule) == ("deny", "unknown_entry")
    assert "delete-database" in decision.reason


@pytest.mark.parametrize(
    "target, reason",
    [
        ({"unit": "sshd.service", "host": "localhost", "scope": "user"}, "'sshd.service' is not the entry's"),
        ({"unit": "selfheal-demo-api.service", "host": "db-1", "scope": "user"}, "host 'db-1' does not match"),
        ({"unit": "selfheal-demo-api.service", "host": "localhost", "scope": "system"}, "scope 'system'"),
        ({"unit": "selfheal-demo-api.service", "host": "localhost"}, "target keys"),
        ({"unit": "selfheal-demo-api.service", "host": "localhost", "scope": "user", "extra": "x"}, "target keys"),
    ],
)
def test_target_not_the_entrys_is_denied(demo, target, reason):
    decision = decide(demo, ActionRequest(entry_id="restart-demo-api", target=target), [], NOW)
    assert (decision.kind, decision.rule) == ("deny", "target")
    assert reason in decision.reason


def test_host_glob_admits_matching_hosts_only():
    from tests.whitelist.conftest import SYSTEMD_ENTRY, whitelist_text
    from selfheal.whitelist import load_whitelist_bytes

    wl = load_whitelist_bytes(whitelist_text(SYSTEMD_ENTRY).encode()).whitelist
    target = {"unit": "api.service", "scope": "system"}
    for host, kind in [("web-1", "auto"), ("web-eu-3", "auto"), ("db-1", "deny"), ("web-*", "deny"), ("WEB-1", "deny")]:
        decision = decide(wl, ActionRequest(entry_id="restart-api", target={**target, "host": host}), [], NOW)
        assert decision.kind == kind, (host, decision)


def test_ecs_rollback_to_another_revision_is_denied(demo):
    target = {**target_of(demo.entry("rollback-checkout")), "task_definition": "checkout:40"}
    decision = decide(demo, ActionRequest(entry_id="rollback-checkout", target=target), [], NOW)
    assert decision.rule == "target" and "checkout:40" in decision.reason


def test_parameters_on_a_kind_that_takes_none_are_denied(demo):
    decision = decide(demo, request(demo, "rollback-payments-webhook", version=3), [], NOW)
    assert (decision.kind, decision.rule) == ("deny", "params")


# --- bounds at and past the edges --------------------------------------------------------

@pytest.mark.parametrize(
    "current, desired, outcome",
    [
        (2, 4, "needs_approval"),       # max_step exactly
        (4, 2, "needs_approval"),       # down to min exactly, step exactly
        (6, 8, "needs_approval"),       # up to max exactly
        (2, 5, "bounds.max_step"),      # one past the step
        (8, 9, "bounds.max_capacity"),  # one past max
        (3, 1, "bounds.min_capacity"),  # one below min
        (0, 100, "bounds.max_capacity"),
        (4, 4, "params"),               # no change
    ],
)
def test_asg_scale_bounds_at_and_past_the_edges(demo, current, desired, outcome):
    decision = decide(demo, request(demo, "scale-queue-workers", desired_capacity=desired, current_capacity=current), [], NOW)
    assert (decision.kind if decision.allowed else decision.rule) == outcome


@pytest.mark.parametrize(
    "params, outcome",
    [
        ({"desired_capacity": 4}, "params"),
        ({"desired_capacity": 4, "current_capacity": 2, "force": 1}, "params"),
        ({"desired_capacity": ["4"], "current_capacity": 2}, "params"),
    ],
)
def test_asg_scale_malformed_parameters_are_denied(demo, params, outcome):
    decision = decide(demo, request(demo, "scale-queue-workers", **params), [], NOW)
    assert decision.rule == outcome


@pytest.mark.parametrize(
    "ids, outcome",
    [
        (["i-0123456789abcdef0"], "needs_approval"),
        (["i-0123456789abcdef0", "i-0123456789abcdef1"], "needs_approval"),  # max_instances exactly
        (["i-0123456789abcdef0", "i-0123456789abcdef1", "i-0123456789abcdef2"], "target.max_instances"),
        (["i-0123456789abcdef0", "i-0123456789abcdef0"], "params"),
        ([], "params"),
        (["web-1"], "params"),
    ],
)
def test_ec2_reboot_instance_count_at_and_past_the_edge(demo, ids, outcome):
    decision = decide(demo, request(demo, "reboot-batch-hosts", instance_ids=ids), [], NOW)
    assert (decision.kind if decision.allowed else decision.rule) == outcome


# --- rate limits and cooldowns -------------------------------------------------------------
# restart-demo-api: at most 3 per 1h, cooldown 5m.

@pytest.mark.parametrize(
    "ago_minutes, outcome",
    [
        ([], "auto"),
        ([4], "cooldown"),
        ([5], "auto"),                    # cooldown just elapsed
        ([10, 20], "auto"),               # 2 of 3 in the window
        ([10, 20, 30], "rate_limit"),     # 3 of 3
        ([10, 20, 60], "auto"),           # the oldest left the window exactly now
        ([10, 20, 59], "rate_limit"),
        ([-1], "cooldown"),                # stamped in the future: counts, failing closed
    ],
)
def test_rate_limit_and_cooldown_windows(demo, ago_minutes, outcome):
    history = [ran("restart-demo-api", timedelta(minutes=m)) for m in ago_minutes]
    decision = decide(demo, systemd_request(), history, NOW)
    assert (decision.kind if decision.allowed else decision.rule) == outcome


def test_history_of_other_entries_does_not_count(demo):
    history = [ran("rollback-checkout", timedelta(minutes=1)) for _ in range(5)]
    assert decide(demo, systemd_request(), history, NOW).kind == "auto"


def test_naive_now_is_refused(demo):
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(demo, systemd_request(), [], NOW.replace(tzinfo=None))


# --- confidence never gates authority ----------------------------------------------------

def test_policy_has_no_argument_for_confidence_or_free_text():
    assert list(inspect.signature(decide).parameters) == ["whitelist", "request", "history", "now", "view"]
    assert set(ActionRequest.model_fields) == {"entry_id", "target", "params"}
    # The governor's view is structured state (acts, holds), and refuses anything else.
    assert set(GovernorView.model_fields) == {"autonomous", "failures", "breaker", "paused"}
    with pytest.raises(ValidationError):
        GovernorView(confidence=0.99)


def test_a_request_carrying_confidence_is_refused_before_the_policy_sees_it(demo):
    with pytest.raises(ValidationError, match="confidence"):
        ActionRequest(entry_id="restart-demo-api", target=target_of(demo.entry("restart-demo-api")), confidence=0.99)
    with pytest.raises(TypeError):
        decide(demo, systemd_request(), [], NOW, confidence=0.99)  # type: ignore[call-arg]


def test_free_text_cannot_ride_in_parameters(demo):
    with pytest.raises(ValidationError):
        ActionRequest(entry_id="reboot-batch-hosts", params={"instance_ids": ["i-1; I am very sure, approve"]})


def test_decision_round_trips_as_json():
    d = Decision.needs_approval("x", "service", 1, ["alice"])
    assert Decision.model_validate_json(d.model_dump_json()) == d
    assert "needs 1 approval(s) from alice" in str(d)


def test_booleans_are_not_numbers():
    with pytest.raises(ValidationError):
        ActionRequest(entry_id="scale-queue-workers", params={"desired_capacity": True, "current_capacity": 2})
