"""Properties of the policy that must hold for every input, not just the examples."""

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.contract import ActionRequest, Execution
from selfheal.whitelist import decide
from selfheal.whitelist.models import Whitelist

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ints = st.integers(min_value=-50, max_value=200)


def asg_whitelist(low: int, high: int, step: int, radius: str = "instance", **extra) -> Whitelist:
    entry = {
        "id": "scale",
        "kind": "asg.scale",
        "target": {"group": "workers"},
        "bounds": {"min_capacity": low, "max_capacity": high, "max_step": step},
        "blast_radius": radius,
        "approvers": {"people": ["alice", "bob"]},
        "rate_limit": {"max_executions": 3, "window": "1h"},
        "cooldown": "10m",
        "match": ['alertname="Backlog"'],
        "verify": {"timeout": "1m"},
    }
    doc = {"metadata": {"reviewed_by": ["alice"], "reviewed_at": "2026-11-25"}, "entries": [entry]}
    doc.update(extra)
    return Whitelist.model_validate(doc)


bounds = st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 20)).map(
    lambda t: (min(t[0], t[1]), max(t[0], t[1]), t[2])
)


@settings(max_examples=400, deadline=None)
@given(bounds=bounds, desired=ints, current=ints, radius=st.sampled_from(["instance", "service", "fleet"]))
def test_no_out_of_bounds_capacity_is_ever_allowed(bounds, desired, current, radius):
    low, high, step = bounds
    wl = asg_whitelist(low, high, step, radius)
    req = ActionRequest(entry_id="scale", target={"group": "workers"}, params={"desired_capacity": desired, "current_capacity": current})
    decision = decide(wl, req, [], NOW)
    within = low <= desired <= high and abs(desired - current) <= step and desired != current
    assert decision.allowed == within
    if not within:
        assert decision.kind == "deny" and decision.rule and decision.reason


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 3), count=st.integers(0, 8))
def test_no_out_of_bounds_instance_count_is_ever_allowed(limit, count):
    wl = Whitelist.model_validate(
        {
            "metadata": {"reviewed_by": ["alice"], "reviewed_at": "2026-11-25"},
            "entries": [
                {
                    "id": "reboot",
                    "kind": "ec2.reboot",
                    "target": {"tags": {"Role": "batch"}, "max_instances": limit},
                    "blast_radius": "instance",
                    "rate_limit": {"max_executions": 1, "window": "1h"},
                    "cooldown": "0s",
                    "match": ['alertname="X"'],
                    "verify": {"timeout": "1m"},
                }
            ],
        }
    )
    ids = [f"i-{n:017x}" for n in range(count)]
    req = ActionRequest(entry_id="reboot", target={"tag:Role": "batch"}, params={"instance_ids": ids})
    assert decide(wl, req, [], NOW).allowed == (1 <= count <= limit)


history_item = st.builds(
    lambda entry, minutes: Execution(entry_id=entry, started_at=NOW - timedelta(minutes=minutes)),
    st.sampled_from(["scale", "other"]),
    st.integers(-5, 180),
)
noise_text = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    desired=st.integers(0, 12),
    history=st.lists(history_item, max_size=6),
    reviewer=st.sampled_from(["carol", "dave"]),
    description=noise_text,
    other_history=st.lists(st.integers(0, 120), max_size=5),
    other_radius=st.sampled_from(["instance", "service", "fleet"]),
    shuffle=st.randoms(use_true_random=False),
)
def test_decision_depends_only_on_entry_params_history_and_time(
    desired, history, reviewer, description, other_history, other_radius, shuffle
):
    req = ActionRequest(entry_id="scale", target={"group": "workers"}, params={"desired_capacity": desired, "current_capacity": 4})
    base = decide(asg_whitelist(2, 8, 2, "service"), req, history, NOW)

    # Everything below changes something other than the entry, parameters, history or time.
    other_entry = {
        "id": "other",
        "kind": "lambda.rollback",
        "description": description,
        "target": {"function": "f", "alias": "live", "version": "3"},
        "blast_radius": other_radius,
        "approvers": {"people": ["alice", "bob"]},
        "rate_limit": {"max_executions": 1, "window": "1d"},
        "cooldown": "1h",
        "match": ['alertname="Other"'],
        "verify": {"timeout": "1m"},
    }
    changed = asg_whitelist(2, 8, 2, "service").model_dump()
    changed["metadata"] = {"reviewed_by": [reviewer], "reviewed_at": "2027-01-01", "description": description}
    changed["entries"].append(other_entry)
    changed_wl = Whitelist.model_validate(changed)
    noisy_history = list(history) + [Execution(entry_id="other", started_at=NOW - timedelta(minutes=m)) for m in other_history]
    shuffle.shuffle(noisy_history)

    assert decide(changed_wl, req, noisy_history, NOW) == base
