"""The governor's raises: autonomy, failure memory, breaker and pauses raise the tier an
action needs (never lower it, never deny), and cooldowns count per target."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from selfheal.whitelist import load_whitelist_bytes
from selfheal.whitelist.policy import decide, targets_of
from selfheal.whitelist.vocabulary import Act, ActionRequest, Execution, GovernorView, Hold

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

WHITELIST = """\
version: 1
metadata: {reviewed_by: [alice], reviewed_at: 2026-11-25}
tiers:
  instance: {approvals: 0}
  service: {approvals: 1}
  fleet: {approvals: 2}
groups:
  sre: [alice, bob, carol]
entries:
  - id: restart-web              # autonomy defaults: 1 target per 10m, escalate to fleet
    kind: systemd.restart
    target: {unit: web.service, host: "web-*"}
    blast_radius: instance
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 3, window: 1h}
    cooldown: 10m
    match: ['alertname="WebDown"']
    verify: {timeout: 1m}
  - id: restart-web-wide
    kind: systemd.restart
    target: {unit: web.service, host: "web-*"}
    blast_radius: instance
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 10, window: 1h}
    cooldown: 10m
    autonomy: {max_targets: 3, window: 30m}
    failure_memory: {window: 1d}
    match: ['alertname="WebDown"']
    verify: {timeout: 1m}
  - id: rollback-api
    kind: ecs.rollback
    target: {cluster: prod, service: api, task_definition: "api:7", region: eu-west-1, account: "123456789012"}
    blast_radius: service
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 2, window: 1h}
    cooldown: 30m
    match: ['alertname="ApiErrors"']
    verify: {timeout: 5m}
  - id: reboot-batch
    kind: ec2.reboot
    target: {tags: {Role: batch}, max_instances: 4, region: eu-west-1, account: "123456789012"}
    blast_radius: instance
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 3, window: 1h}
    cooldown: 1h
    autonomy: {max_targets: 2, escalate_to: service}
    match: ['alertname="BatchSilent"']
    verify: {timeout: 5m}
"""
WL = load_whitelist_bytes(WHITELIST.encode(), "governor.yaml").whitelist
I1, I2, I3, I4 = (f"i-{n:017x}" for n in range(1, 5))
AWS = {"region": "eu-west-1", "account": "123456789012"}
API = ActionRequest(entry_id="rollback-api", target={"cluster": "prod", "service": "api", "task_definition": "api:7", **AWS})
API_TARGET = "ecs.rollback:prod/api/api:7"


def web(host: str, entry: str = "restart-web") -> ActionRequest:
    return ActionRequest(entry_id=entry, target={"unit": "web.service", "host": host, "scope": "system"})


def batch(*ids: str) -> ActionRequest:
    return ActionRequest(entry_id="reboot-batch", target={"tag:Role": "batch", **AWS}, params={"instance_ids": list(ids)})


def claim(*targets: str, ago: float = 5) -> Act:
    return Act(targets=list(targets), at=NOW - timedelta(minutes=ago), incident_id="inc-claim")


def failure(*targets: str, ago: float = 60) -> Act:
    return Act(targets=list(targets), at=NOW - timedelta(minutes=ago), incident_id="inc-fail", note="verification_failed")


def hold(until_in: float | None = None, by: str = "alice") -> Hold:
    until = None if until_in is None else NOW + timedelta(minutes=until_in)
    return Hold(by=by, at=NOW - timedelta(hours=1), reason="maintenance", until=until)


def ran(entry: str, *targets: str, ago: float) -> Execution:
    return Execution(entry_id=entry, started_at=NOW - timedelta(minutes=ago), incident_id="inc-old", targets=list(targets))


def view(**state) -> GovernorView:
    return GovernorView(**state)


DAY = 24 * 60

# --- the raises, one table ---------------------------------------------------------------

@pytest.mark.parametrize(
    "state, request_, kind, tier, reason",
    [
        pytest.param(view(), web("web-1"), "auto", "instance", None, id="first-host-alone-is-auto"),
        pytest.param(view(autonomous=[claim("web-1")]), web("web-2"), "needs_approval", "fleet",
                     "acting alone on web-2 would reach 2 distinct targets within 10m; the entry allows 1 (already: web-1)",
                     id="second-host-in-window-escalates-to-highest-tier"),
        pytest.param(view(autonomous=[claim("web-1")]), web("web-1"), "auto", "instance", None, id="same-host-again-does-not-widen"),
        pytest.param(view(autonomous=[claim("web-1", ago=10)]), web("web-2"), "auto", "instance", None, id="claim-exactly-window-ago-has-left"),
        pytest.param(view(autonomous=[claim("web-1", ago=90)]), web("web-2"), "auto", "instance", None, id="claim-older-than-window"),
        pytest.param(view(autonomous=[claim("web-1", ago=-5)]), web("web-2"), "needs_approval", "fleet", "already: web-1",
                     id="claim-stamped-in-the-future-counts"),
        pytest.param(view(autonomous=[claim("web-1"), claim("web-1", ago=2), claim("web-2", ago=20)]), web("web-3", "restart-web-wide"),
                     "auto", "instance", None, id="max-targets-3-third-distinct-host-is-auto"),
        pytest.param(view(autonomous=[claim("web-1", "web-2"), claim("web-3", ago=29)]), web("web-4", "restart-web-wide"),
                     "needs_approval", "fleet", "would reach 4 distinct targets within 30m; the entry allows 3 (already: web-1, web-2, web-3)",
                     id="max-targets-3-fourth-host-escalates"),
        pytest.param(view(autonomous=[claim("web-1", "web-2", "web-3", ago=31)]), web("web-4", "restart-web-wide"),
                     "auto", "instance", None, id="max-targets-3-claims-outside-30m-window"),
        pytest.param(view(), batch(I1, I2), "auto", "instance", None, id="ec2-two-instances-within-limit"),
        pytest.param(view(), batch(I3, I1, I2), "needs_approval", "service",
                     f"acting alone on {I1}, {I2}, {I3} would reach 3 distinct targets", id="ec2-one-request-crosses-limit"),
        pytest.param(view(autonomous=[claim(I1)]), batch(I2, I3), "needs_approval", "service", f"(already: {I1})",
                     id="ec2-request-plus-claim-crosses-limit-to-escalate-to"),
        pytest.param(view(autonomous=[claim(I1)]), batch(I1, I2), "auto", "instance", None, id="ec2-claimed-instance-not-counted-twice"),
        pytest.param(view(failures=[failure("web-1")]), web("web-1"), "needs_approval", "service",
                     "web-1 ended verification_failed in incident inc-fail at 2026-11-25T11:00:00+00:00 (within 7d)",
                     id="failure-on-same-host-needs-an-approver"),
        pytest.param(view(failures=[failure("web-2")]), web("web-1"), "auto", "instance", None, id="failure-on-another-host-is-ignored"),
        pytest.param(view(failures=[failure("web-1", ago=7 * DAY)]), web("web-1"), "auto", "instance", None, id="failure-7d-ago-has-left"),
        pytest.param(view(failures=[failure("web-1", ago=23 * 60)]), web("web-1", "restart-web-wide"), "needs_approval", "service",
                     "(within 1d)", id="failure-within-entry-window"),
        pytest.param(view(failures=[failure("web-1", ago=25 * 60)]), web("web-1", "restart-web-wide"), "auto", "instance", None,
                     id="failure-outside-entry-window"),
        pytest.param(view(failures=[failure(I2, I4)]), batch(I1, I2), "needs_approval", "service", f"{I2} ended",
                     id="ec2-failure-on-one-instance"),
        pytest.param(view(breaker=hold()), web("web-1"), "needs_approval", "service", "breaker open since 2026-11-25T11:00:00+00:00: maintenance",
                     id="open-breaker-needs-an-approver"),
        pytest.param(view(paused=[hold()]), web("web-1"), "needs_approval", "service", "autonomy paused by alice at", id="pause-without-end"),
        pytest.param(view(paused=[hold(until_in=30)]), web("web-1"), "needs_approval", "service", "until 2026-11-25T12:30:00+00:00",
                     id="pause-until-later-is-active"),
        pytest.param(view(paused=[hold(until_in=0)]), web("web-1"), "auto", "instance", None, id="pause-ending-now-has-expired"),
        pytest.param(view(paused=[hold(until_in=-1)]), web("web-1"), "auto", "instance", None, id="pause-expired"),
        pytest.param(view(breaker=hold(), paused=[hold()], failures=[failure(API_TARGET)]), API, "needs_approval", "service", None,
                     id="declared-service-tier-stays-and-is-not-raised"),
    ],
)
def test_governor_state_raises_the_tier(state, request_, kind, tier, reason):
    d = decide(WL, request_, [], NOW, state)
    entry = WL.entry(request_.entry_id)
    assert (d.kind, d.tier, d.declared_tier) == (kind, tier, entry.blast_radius), str(d)
    assert d.approvals == WL.tiers[tier].approvals
    assert d.targets == targets_of(entry, request_)
    if reason is None:
        assert d.raised_by == []
    else:
        assert len(d.raised_by) == 1 and reason in d.raised_by[0], d.raised_by


def test_escalated_request_asks_the_entrys_approvers():
    d = decide(WL, web("web-2"), [], NOW, view(autonomous=[claim("web-1")]))
    assert (d.approvals, d.approvers) == (2, ["alice", "bob", "carol"])
    assert "raised from instance" in str(d)


def test_open_breaker_does_not_lower_an_autonomy_escalation():
    claims = [claim("web-1")]
    alone = decide(WL, web("web-2"), [], NOW, view(autonomous=claims))
    both = decide(WL, web("web-2"), [], NOW, view(autonomous=claims, breaker=hold()))
    assert (alone.tier, alone.approvals) == ("fleet", 2)
    assert (both.tier, both.approvals) == ("fleet", 2), str(both)
    assert len(both.raised_by) == 2 and "breaker open" in both.raised_by[0] and "distinct targets" in both.raised_by[1]


def test_several_raises_at_once_list_every_reason():
    d = decide(WL, web("web-1"), [], NOW, view(paused=[hold()], breaker=hold(), failures=[failure("web-1")]))
    assert (d.kind, d.tier, d.approvals) == ("needs_approval", "service", 1)
    assert len(d.raised_by) == 3, d.raised_by
    assert [r.split()[0] for r in d.raised_by] == ["autonomy", "breaker", "web-1"]


def test_without_a_view_the_declared_tier_stands():
    d = decide(WL, batch(I1, I2, I3), [], NOW, None)
    assert (d.kind, d.tier, d.declared_tier, d.raised_by) == ("auto", "instance", "instance", [])
    assert decide(WL, batch(I1, I2, I3), [], NOW, GovernorView()).tier == "service"  # the governor would raise it


# --- cooldown per target, rate limit per entry ----------------------------------------------

UNTARGETED = Execution(entry_id="restart-web", started_at=NOW - timedelta(minutes=5), incident_id="inc-legacy", autonomous=True)


@pytest.mark.parametrize(
    "history, state, request_, kind, rule, reason",
    [
        pytest.param([ran("restart-web", "web-1", ago=5)], view(), web("web-2"), "auto", None, None, id="cooldown-on-A-does-not-block-B"),
        pytest.param([ran("restart-web", "web-1", ago=5)], view(), web("web-1"), "deny", "cooldown", "last execution on web-1 at",
                     id="cooldown-on-A-blocks-A"),
        pytest.param([ran("restart-web", "web-1", ago=10)], view(), web("web-1"), "auto", None, None, id="cooldown-exactly-elapsed"),
        pytest.param([ran("restart-web-wide", "web-1", ago=5)], view(), web("web-1"), "auto", None, None, id="cooldown-is-per-entry"),
        pytest.param([UNTARGETED], view(), web("web-2"), "deny", "cooldown", "within the 10m cooldown", id="untargeted-blocks-every-target"),
        pytest.param([ran("reboot-batch", I1, ago=30)], view(), batch(I2, I3), "auto", None, None, id="ec2-cooldown-other-instances"),
        pytest.param([ran("reboot-batch", I1, ago=30)], view(), batch(I2, I1), "deny", "cooldown", f"on {I1}, {I2} at",
                     id="ec2-cooldown-one-instance-of-several"),
        pytest.param([ran("restart-web", f"web-{n}", ago=15 * n) for n in (1, 2, 3)], view(), web("web-4"), "deny", "rate_limit",
                     "3 execution(s) in the last 1h; the limit is 3", id="rate-limit-counts-every-target"),
        pytest.param([ran("restart-web", f"web-{n}", ago=20 * n) for n in (1, 2, 3)], view(), web("web-4"), "auto", None, None,
                     id="rate-limit-execution-exactly-window-ago-has-left"),
        pytest.param([ran("restart-web", f"web-{n}", ago=15 * n) for n in (1, 2, 3)], view(autonomous=[claim("web-1")], breaker=hold()),
                     web("web-4"), "deny", "rate_limit", "the limit is 3", id="rate-limit-denies-even-when-escalated"),
        pytest.param([ran("rollback-api", API_TARGET, ago=40), ran("rollback-api", API_TARGET, ago=50)], view(), API, "deny", "rate_limit",
                     "the limit is 2", id="rate-limit-denies-a-service-tier-entry"),
        pytest.param([ran("restart-web-wide", "web-1", ago=m) for m in (15, 20, 25)], view(), web("web-1"), "auto", None, None,
                     id="rate-limit-is-per-entry"),
    ],
)
def test_cooldown_per_target_rate_limit_per_entry(history, state, request_, kind, rule, reason):
    d = decide(WL, request_, history, NOW, state)
    assert (d.kind, d.rule) == (kind, rule), str(d)
    if reason is not None:
        assert reason in d.reason, d.reason


# --- properties ----------------------------------------------------------------------------

POOL = ["web-1", "web-2", "web-3", "web-4", I1, I2, I3, I4, API_TARGET]
minutes = (st.integers(-2 * DAY, 2 * DAY) | st.integers(-60, 5)).map(lambda m: NOW + timedelta(minutes=m))  # often in a window
acts = st.builds(Act, targets=st.lists(st.sampled_from(POOL), max_size=3), at=minutes,
                 incident_id=st.sampled_from(["inc-a", "inc-b"]), note=st.sampled_from(["", "failed", "verification_failed"]))
holds = st.builds(Hold, by=st.sampled_from(["alice", "governor"]), at=minutes, reason=st.just("r"),
                  until=st.none() | st.integers(-120, 120).map(lambda m: NOW + timedelta(minutes=m)))
views = st.builds(GovernorView, autonomous=st.lists(acts, max_size=4), failures=st.lists(acts, max_size=3),
                  breaker=st.none() | holds, paused=st.lists(holds, max_size=2))
requests = st.one_of(
    st.builds(web, st.sampled_from(["web-1", "web-2", "web-3", "web-4"]), st.sampled_from(["restart-web", "restart-web-wide"])),
    st.lists(st.sampled_from([I1, I2, I3, I4]), min_size=1, max_size=4, unique=True).map(lambda ids: batch(*ids)),
    st.just(API),
)
histories = st.lists(st.builds(lambda e, ts, m: ran(e, *ts, ago=m), st.sampled_from([e.id for e in WL.entries]),
                               st.lists(st.sampled_from(POOL), max_size=2), st.integers(-5, 90)), max_size=4)
MANY = settings(max_examples=300, deadline=None)


def approvals(d) -> int:
    return d.approvals if d.kind == "needs_approval" else 0


def merged(base: GovernorView, more: GovernorView) -> GovernorView:
    return GovernorView(autonomous=base.autonomous + more.autonomous, failures=base.failures + more.failures,
                        breaker=base.breaker or more.breaker, paused=base.paused + more.paused)


@MANY
@given(request_=requests, history=histories, state=views)
def test_the_view_never_lowers_the_tier_and_never_denies(request_, history, state):
    d = decide(WL, request_, history, NOW, state)
    assert (d.kind == "deny") == (decide(WL, request_, history, NOW, GovernorView()).kind == "deny")
    if d.kind != "deny":
        assert WL.tiers[d.tier].approvals >= WL.tiers[d.declared_tier].approvals
        assert d.approvals == WL.tiers[d.tier].approvals


@MANY
@given(request_=requests)
def test_an_empty_view_raises_only_a_request_wider_than_max_targets(request_):
    d = decide(WL, request_, [], NOW, GovernorView())
    entry, tiers = WL.entry(request_.entry_id), WL.tiers
    escalate = WL.escalation_tier(entry.id)
    alone_too_wide = (tiers[entry.blast_radius].approvals == 0 and len(set(d.targets)) > entry.autonomy.max_targets
                      and tiers[escalate].approvals > tiers[entry.blast_radius].approvals)
    assert d.tier == (escalate if alone_too_wide else entry.blast_radius)
    assert len(d.raised_by) == int(alone_too_wide)


@MANY
@given(request_=requests, history=histories, state=views)
@example(request_=web("web-1"), history=[], state=view(paused=[hold()], breaker=hold(), failures=[failure("web-1")]))
@example(request_=web("web-2"), history=[], state=view(paused=[hold()], autonomous=[claim("web-1")]))
def test_raised_by_is_empty_iff_the_declared_tier_stands(request_, history, state):
    d = decide(WL, request_, history, NOW, state)
    if d.kind != "deny":
        assert (d.raised_by == []) == (d.tier == d.declared_tier), str(d)


def assert_not_lowered(request_, history, state, more):
    before = decide(WL, request_, history, NOW, state)
    after = decide(WL, request_, history, NOW, merged(state, more))
    assert approvals(after) >= approvals(before), (str(before), str(after))
    assert not (before.kind == "needs_approval" and after.kind == "auto")


@MANY
@given(request_=requests, history=histories, state=views, more=views.map(lambda v: v.model_copy(update={"autonomous": []})))
def test_more_failures_a_breaker_or_pauses_never_lower_the_tier(request_, history, state, more):
    assert_not_lowered(request_, history, state, more)


@MANY
@given(request_=requests, history=histories, state=views, more=st.lists(acts, max_size=4))
def test_more_claims_within_max_targets_never_lower_the_tier(request_, history, state, more):
    entry = WL.entry(request_.entry_id)
    recent = {t for a in state.autonomous + more if a.at > NOW - entry.autonomy.window for t in a.targets}
    if len(recent) > entry.autonomy.max_targets:
        return  # beyond max_targets already: covered by test_more_claims_never_lower_the_tier
    assert_not_lowered(request_, history, state, GovernorView(autonomous=more))


@MANY
@given(request_=requests, history=histories, state=views, more=st.lists(acts, max_size=4))
@example(request_=web("web-2"), history=[], state=view(autonomous=[claim("web-1")]), more=[claim("web-2")])
def test_more_claims_never_lower_the_tier(request_, history, state, more):
    assert_not_lowered(request_, history, state, GovernorView(autonomous=more))
