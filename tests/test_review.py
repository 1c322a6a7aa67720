"""`selfheal review` on seeded audit records, without Temporal: the figures per entry, per
approver, for shadow entries and drills; each recommendation on data that should raise it
and on data that should not; the retention warning; the JSON and Markdown shapes."""

from __future__ import annotations

import io
import itertools
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console
from typer.testing import CliRunner

from selfheal import review as rv
from selfheal.cli import app
from selfheal.cli.review import APPROVER_COLUMNS, ENTRY_COLUMNS, as_markdown, as_text
from selfheal.contract import ApprovalEvent, AuditRecord, Decision, Diagnosis, DrillRecord, RemediationResult
from selfheal.whitelist import load_whitelist_bytes
from selfheal.whitelist.policy import effective_tier
from selfheal.whitelist.vocabulary import Act, GovernorView, Hold
from selfheal.workflows.agent_answer import model_reasons
from tests.workflows.helpers import whitelist_yaml

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SHADOW_ENTRY = """
  - id: rollback-payments
    kind: ecs.rollback
    mode: shadow
    target: {cluster: demo, service: payments, task_definition: "payments:3", region: eu-west-1, account: "123456789012"}
    blast_radius: service
    approvers: {people: [alice, bob]}
    rate_limit: {max_executions: 5, window: 1h}
    cooldown: 0s
    match: ['alertname="PaymentsErrorRate"']
    verify: {timeout: 30s}
"""
WHITELIST = load_whitelist_bytes(whitelist_yaml("api.service", extra=SHADOW_ENTRY).encode(), "wl.yaml").whitelist
_ids = itertools.count(1)


def answer(kind: str, who: str, after: float = 60.0, fast: bool = False, verified: bool = True) -> ApprovalEvent:
    return ApprovalEvent(kind=kind, approver=who, at=NOW, via="update", channel="ssh" if verified else "unverified",
                         verified=verified, after_seconds=after, fast=fast)


def incident(entry: str | None, outcome: str, *, key: str | None = None, decision: str = "needs_approval",
             answers=(), rule: str | None = None, raised=(), ran: bool = False, matched=None, age=timedelta(hours=1),
             detail: str = "") -> AuditRecord:
    n = next(_ids)
    iid = f"{key or f'key-{n}'}~{n:012x}"
    d = None
    if entry and decision == "deny":
        d = Decision.deny(entry, rule or "rate_limit", "refused")
    elif entry and decision == "auto":
        d = Decision.auto(entry, "instance", raised_by=list(raised), declared_tier="instance")
    elif entry:
        d = Decision.needs_approval(entry, "service", 1, ["alice", "bob"], raised_by=list(raised), declared_tier="service")
    done = RemediationResult(entry_id=entry, kind="systemd.restart", idempotency_key=f"{iid}/act/{entry}", action="executed",
                             detail="restarted") if ran else None
    return AuditRecord(incident_id=iid, status="done", outcome=outcome, outcome_detail=detail, decision=d,
                       approvals=list(answers), remediation=done, started_at=NOW - age,
                       matched_entries=matched if matched is not None else ([entry] if entry else []),
                       diagnosis=Diagnosis(proposal=entry))


def drill(verdicts: dict[str, str], outcome: str, key: str = "key-drill", proposal: str = "restart-api-fleet") -> AuditRecord:
    n = next(_ids)
    answers = [answer("approved" if v == "missed" else "rejected", who, after=1.0, fast=True) for who, v in verdicts.items()]
    return AuditRecord(incident_id=f"{key}~{n:012x}", status="done", outcome=outcome, started_at=NOW - timedelta(hours=1),
                       decision=Decision.needs_approval(proposal, "fleet", 2, ["alice", "bob"]), approvals=answers,
                       drill=DrillRecord(of_incident=f"{key}~0", proposal=proposal, why_wrong="the alerts do not match it",
                                         verdicts=verdicts))


def build(records, whitelist=WHITELIST, since=timedelta(days=30), retention=30.0, **kw) -> rv.Review:
    return rv.build_review(records, whitelist=whitelist, now=NOW, since=since, retention_days=retention, **kw)


def figures(review: rv.Review, entry: str) -> rv.EntryFigures:
    [f] = [f for f in review.entries if f.entry == entry]
    return f


def person(review: rv.Review, name: str) -> rv.ApproverFigures:
    [p] = [p for p in review.approvers if p.person == name]
    return p


def kinds(review: rv.Review) -> set[tuple[str, str]]:
    return {(r.kind, r.subject) for r in review.recommendations}


# --- figures ------------------------------------------------------------------------------

def seeded() -> list[AuditRecord]:
    return [
        *[incident("restart-api", "remediated", decision="auto", ran=True) for _ in range(3)],
        incident("restart-api", "verification_failed", decision="auto", ran=True),
        incident("restart-api", "denied", decision="deny", rule="rate_limit"),
        incident("restart-api", "denied", decision="deny", rule="cooldown"),
        # raised by a pause: people approved, it ran (not autonomous)
        incident("restart-api", "remediated", ran=True, answers=[answer("approved", "alice")],
                 raised=["autonomy paused by bob at 2026-11-26T10:00:00+00:00: deploy freeze"]),
        # allowed, then refused at the reservation: the rule is in the outcome's detail
        incident("rollback-checkout", "denied", answers=[answer("approved", "bob")], detail="[rate_limit] 1 execution(s) in 1h"),
        incident("rollback-checkout", "rejected", answers=[answer("rejected", "alice")]),
        incident("rollback-checkout", "expired"),
        incident(None, "no_remedy", matched=["restart-api-service"]),
        incident(None, "no_remedy", matched=[]),
    ]


def test_entry_figures_count_each_outcome_once_by_the_entry_decided():
    records = seeded()
    review = build(records)
    api = figures(review, "restart-api")
    assert (api.incidents, api.autonomous, api.asked, api.approved) == (7, 4, 1, 1)  # a run that failed verification ran alone too
    assert (api.remediated, api.verification_failed) == (4, 1)
    assert api.denials == {"rate_limit": 1, "cooldown": 1}
    assert api.escalations == {"denied:rate_limit": 1, "denied:cooldown": 1, "verification_failed": 1, "raised:pause": 1}
    checkout = figures(review, "rollback-checkout")
    assert (checkout.incidents, checkout.asked, checkout.approved, checkout.rejected, checkout.expired) == (3, 3, 1, 1, 1)
    assert checkout.denials == {"rate_limit": 1}  # read from "[rule] ..." when the decision itself allowed it
    assert checkout.last_incident == max(r.started_at for r in records if r.decision and r.decision.entry_id == "rollback-checkout")
    # no_remedy counts for every entry the alerts matched, and as no incident of it
    service = figures(review, "restart-api-service")
    assert service.incidents == 0 and service.escalations == {"no_remedy": 1}
    assert review.counts.incidents == len(records) and review.counts.unmatched == 1
    # the whitelist's order, every entry listed, used or not
    assert [f.entry for f in review.entries] == [e.id for e in WHITELIST.entries]
    assert figures(review, "rollback-payments").mode == "shadow"


def test_an_entry_no_longer_in_the_whitelist_is_listed_after_the_others():
    review = build([incident("restart-old", "remediated", decision="auto", ran=True)])
    assert review.entries[-1].entry == "restart-old" and review.entries[-1].mode is None
    assert review.entries[-1].autonomous == 1
    assert ("remove", "restart-old") not in kinds(review)


def test_incidents_older_than_since_are_left_out():
    old = incident("restart-api", "remediated", decision="auto", ran=True, age=timedelta(days=10))
    new = incident("restart-api", "remediated", decision="auto", ran=True, age=timedelta(days=1))
    assert figures(build([old, new], since=timedelta(days=7)), "restart-api").incidents == 1
    assert figures(build([old, new], since=timedelta(days=14)), "restart-api").incidents == 2


def test_raised_tiers_are_named_by_cause_as_the_policy_and_the_model_check_word_them():
    entry = WHITELIST.entry("restart-api")
    at = NOW - timedelta(minutes=1)
    view = GovernorView(
        autonomous=[Act(targets=["web-9"], at=at, incident_id="i0")],
        failures=[Act(targets=["localhost"], at=at, incident_id="i1", note="verification_failed")],
        breaker=Hold(by="governor", at=at, reason="3 failures"),
        paused=[Hold(by="bob", at=at, reason="freeze")])
    _, reasons = effective_tier(WHITELIST, entry, ["localhost"], view, NOW)
    assert len(reasons) == 4
    assert sorted(rv.raise_cause(r) for r in reasons) == ["autonomy", "breaker", "failure_memory", "pause"]
    said = model_reasons(Diagnosis(proposal="restart-api"), Diagnosis(proposal="restart-api-fleet", params={"n": 1}))
    assert len(said) == 2 and {rv.raise_cause(r) for r in said} == {"model"}
    assert rv.raise_cause("something new") == "other"


def test_approver_figures_rate_median_fast_and_unverified():
    bob = [answer("approved", "bob", after=a, fast=a < 30, verified=a != 2.0) for a in (2.0, 4.0, 90.0, 3.0)]
    records = [incident("rollback-checkout", "remediated", ran=True, answers=[e]) for e in bob]
    records += [incident("rollback-checkout", "rejected", answers=[answer("rejected", "bob")]),
                incident("rollback-checkout", "expired", answers=[answer("refused", "mallory"), answer("unverified", "carol")])]
    review = build(records)
    b = person(review, "bob")
    assert (b.approved, b.rejected) == (4, 1) and b.approve_rate == pytest.approx(4 / 5)
    assert b.median_seconds_to_approve == pytest.approx(3.5)  # median of 2, 3, 4, 90
    assert b.fast == 3 and b.unverified == 1
    assert person(review, "mallory").refused == 1 and person(review, "mallory").approve_rate is None
    assert person(review, "carol").unverified == 1 and person(review, "carol").approved == 0


def test_drills_count_only_as_caught_or_missed_never_as_incidents():
    real = seeded()
    drills = [drill({"alice": "missed"}, "drill_missed"), drill({"bob": "caught"}, "drill_caught"),
              drill({"bob": "caught", "carol": "missed"}, "drill_caught", proposal="restart-api"), drill({}, "drill_unanswered")]
    without, with_drills = build(real), build(real + drills)
    assert with_drills.entries == without.entries  # a drill's entry gains nothing
    for name in ("alice", "bob"):
        before, after = person(without, name), person(with_drills, name)
        assert (after.approved, after.rejected, after.fast, after.median_seconds_to_approve) == \
            (before.approved, before.rejected, before.fast, before.median_seconds_to_approve)
    assert (person(with_drills, "alice").drills_missed, person(with_drills, "bob").drills_caught) == (1, 2)
    assert person(with_drills, "carol").drills_missed == 1 and person(with_drills, "carol").approved == 0
    assert with_drills.counts.drills == len(drills) and with_drills.counts.incidents == len(real)
    d = with_drills.drills
    assert (d.drills, d.caught, d.missed, d.unanswered) == (4, 2, 1, 1)


def test_open_workflows_are_counted_apart_and_hold_back_never_used():
    opened = [rv.OpenItem(id="k~1", entry="restart-api-fleet"), rv.OpenItem(id="k~2", drill=True, entry="restart-api")]
    review = build([], opened=opened)
    assert (review.counts.open_incidents, review.counts.open_drills, review.drills.open) == (1, 1, 1)
    assert figures(review, "restart-api-fleet").open == 1 and figures(review, "restart-api").open == 0
    assert ("remove", "restart-api-fleet") not in kinds(review)
    assert ("remove", "restart-api") in kinds(review)  # an open drill is no use of the entry


# --- shadow entries -------------------------------------------------------------------------

def shadowed(n: int, key: str = "pay", would: str = "needs_approval") -> list[AuditRecord]:
    return [incident("rollback-payments", "shadowed", key=key, decision=would, rule="bounds.max_capacity") for _ in range(n)]


def test_shadow_entries_are_compared_with_what_people_did_for_the_same_alerts():
    records = shadowed(3) + [
        incident("rollback-payments", "remediated", key="pay", ran=True, answers=[answer("approved", "alice")]),
        incident("rollback-payments", "rejected", key="pay", answers=[answer("rejected", "bob")]),
        incident("rollback-checkout", "remediated", key="pay", ran=True, answers=[answer("approved", "bob")]),
        incident(None, "no_remedy", key="pay", matched=["rollback-payments"]),
        incident("rollback-payments", "rejected", key="elsewhere"),  # another alert: not compared
        drill({"alice": "missed"}, "drill_missed", key="pay"),     # a drill shares the key: never compared
    ]
    [s] = build(records).shadow
    assert s.entry == "rollback-payments" and s.shadowed == 3 and s.alerts == ["pay"]
    assert s.would == {"auto": 0, "needs_approval": 3, "deny": 0}
    assert len(s.same_alerts) == 4 and (s.agreed, s.rejected, s.failed, s.other) == (1, 1, 0, 2)
    assert {a.entry for a in s.same_alerts} == {"rollback-payments", "rollback-checkout", None}
    assert ["rejected by bob"] in [a.people for a in s.same_alerts]
    assert s.verdict == "keep"
    assert any("people rejected it for the same alert 1 time(s)" in e for e in s.evidence)
    assert any(f"only 3 shadowed incident(s) (promotion wants {rv.PROMOTE_MIN_SHADOWED})" in e for e in s.evidence)


@pytest.mark.parametrize("records, verdict", [
    (shadowed(rv.PROMOTE_MIN_SHADOWED), "promote"),
    (shadowed(rv.PROMOTE_MIN_SHADOWED) + [incident("rollback-payments", "remediated", key="pay", ran=True)], "promote"),
    (shadowed(rv.PROMOTE_MIN_SHADOWED - 1), "keep"),
    (shadowed(rv.PROMOTE_MIN_SHADOWED - 1) + shadowed(1, would="deny"), "keep"),
    (shadowed(rv.PROMOTE_MIN_SHADOWED) + [incident("rollback-payments", "rejected", key="pay")], "keep"),
    (shadowed(rv.PROMOTE_MIN_SHADOWED) + [incident("rollback-payments", "verification_failed", key="pay", ran=True)], "keep"),
], ids=["enough", "enough-and-agreed", "too-few", "would-deny", "people-rejected", "failed-for-real"])
def test_promotion_is_proposed_only_on_enough_clean_evidence(records, verdict):
    review = build(records)
    [s] = review.shadow
    assert s.verdict == verdict
    expected = "promote" if verdict == "promote" else "keep_in_shadow"
    assert (("promote", "rollback-payments") in kinds(review)) is (verdict == "promote")
    assert (expected, "rollback-payments") in kinds(review)
    # a shadow decision brings nobody in: no escalation and nothing asked of people
    f = figures(review, "rollback-payments")
    assert f.shadowed == sum(r.outcome == "shadowed" for r in records)
    assert f.asked == sum(r.outcome != "shadowed" and r.decision.kind == "needs_approval" for r in records)


# --- recommendations: each fires on its evidence, and not short of it ------------------------

def runs(entry: str, failed: int, ok: int) -> list[AuditRecord]:
    return ([incident(entry, "verification_failed", decision="auto", ran=True) for _ in range(failed)]
            + [incident(entry, "remediated", decision="auto", ran=True) for _ in range(ok)])


def approvals_by(name: str, afters: list[float], fast: int = 0) -> list[AuditRecord]:
    return [incident("rollback-checkout", "remediated", ran=True, answers=[answer("approved", name, after=a, fast=i < fast)])
            for i, a in enumerate(afters)]


CASES = [
    ("shrink", "restart-api", runs("restart-api", 2, 3), True),
    ("shrink", "restart-api", runs("restart-api", 1, 4), False),       # one failure is bad luck
    ("shrink", "restart-api", runs("restart-api", 2, 8), False),       # under a third of its runs
    ("denied", "restart-api", [incident("restart-api", "denied", decision="deny", rule=r)
                               for r in ("rate_limit", "rate_limit", "cooldown")], True),
    ("denied", "restart-api", [incident("restart-api", "denied", decision="deny") for _ in range(2)], False),
    ("unanswered", "rollback-checkout", [incident("rollback-checkout", o) for o in ("expired", "expired", "rejected")], True),
    ("unanswered", "rollback-checkout", [incident("rollback-checkout", o) for o in ("expired", "expired", "rejected",
                                                                                     "rejected", "rejected")], False),
    ("unanswered", "rollback-checkout", [incident("rollback-checkout", "expired")], False),
    ("remove", "restart-api-fleet", [], True),
    ("remove", "restart-api-fleet", [incident("restart-api-fleet", "rejected")], False),
    ("remove", "restart-api-fleet", [incident("restart-api-fleet", "denied", decision="deny")], False),  # used, if refused
    ("review_approvals", "bob", approvals_by("bob", [4, 3, 5]), True),
    ("review_approvals", "bob", approvals_by("bob", [40, 300, 90], fast=2), True),   # half sooner than min_review
    ("review_approvals", "bob", approvals_by("bob", [40, 300, 90], fast=1), False),
    ("review_approvals", "bob", approvals_by("bob", [1, 2]), False),                # too few to judge
    ("unverified", "bob", [incident("rollback-checkout", "remediated", answers=[answer("approved", "bob", verified=False)])], True),
    ("unverified", "bob", [incident("rollback-checkout", "expired", answers=[answer("unverified", "bob", verified=False)])], True),
    ("unverified", "bob", approvals_by("bob", [40]), False),
    ("drill_missed", "alice", [drill({"alice": "missed"}, "drill_missed")], True),
    ("drill_missed", "alice", [drill({"alice": "caught"}, "drill_caught")], False),
]


@pytest.mark.parametrize("kind, subject, records, fires", CASES,
                         ids=[f"{k}-{'fires' if f else 'quiet'}-{i}" for i, (k, _, _, f) in enumerate(CASES)])
def test_each_recommendation_fires_on_its_evidence_and_not_short_of_it(kind, subject, records, fires):
    review = build(records)
    assert ((kind, subject) in kinds(review)) is fires, [r.text for r in review.recommendations]


def test_recommendations_say_the_figures_they_rest_on():
    review = build(runs("restart-api", 3, 2) + approvals_by("bob", [4, 3, 5, 60]) + [drill({"carol": "missed"}, "drill_missed")])
    texts = {r.kind: r.text for r in review.recommendations}
    assert texts["shrink"] == "shrink: restart-api failed verification 3 of 5 times"
    assert texts["review_approvals"].startswith("approved in a median of 4 s by bob")
    assert texts["review_approvals"].endswith("review what the approval shows")
    assert texts["drill_missed"].startswith("drills missed by carol: approved 1 of 1")
    assert "never used in 30d: restart-api-fleet: remove?" in [r.text for r in review.recommendations]


# --- retention ------------------------------------------------------------------------------

def test_a_window_beyond_retention_is_warned_and_the_review_says_what_it_covers():
    review = build([], since=timedelta(days=90), retention=30.0)
    assert review.history.beyond_retention is True and review.history.retention_days == 30.0
    assert review.history.covers_from == NOW - timedelta(days=30)
    [warning] = review.warnings
    assert "--since 90d reaches beyond the namespace's retention (30 days)" in warning
    assert "never used in 30d: restart-api: remove?" in [r.text for r in review.recommendations]


@pytest.mark.parametrize("since, retention", [(timedelta(days=7), 30.0), (timedelta(days=30), 30.0), (timedelta(days=900), None)])
def test_a_window_within_retention_is_not_warned(since, retention):
    review = build([], since=since, retention=retention)
    assert review.history.beyond_retention is False and review.warnings == []
    assert review.history.covers_from == NOW - since


def test_the_limit_and_records_without_an_audit_are_warned():
    review = build([], unreadable=["k~1 (terminated)"], limit=10, limit_reached=True)
    assert review.counts.unreadable == ["k~1 (terminated)"] and review.counts.limit_reached
    assert any("--limit 10" in w for w in review.warnings) and any("1 closed workflow(s)" in w for w in review.warnings)


# --- output ---------------------------------------------------------------------------------

def mixed() -> rv.Review:
    records = seeded() + shadowed(2) + [incident("rollback-payments", "rejected", key="pay", answers=[answer("rejected", "bob")]),
                                        drill({"alice": "missed"}, "drill_missed")]
    return build(records, since=timedelta(days=60))


def test_json_is_a_stable_document_that_reads_back():
    review = mixed()
    doc = json.loads(review.model_dump_json())
    assert list(doc) == ["version", "generated_at", "since", "history", "counts", "entries", "approvers", "shadow",
                         "drills", "recommendations", "warnings"]
    assert doc["version"] == 1 and doc["since"] == "60d"
    assert rv.Review.model_validate_json(review.model_dump_json()) == review
    api = next(e for e in doc["entries"] if e["entry"] == "restart-api")
    assert api["denials"] == {"rate_limit": 1, "cooldown": 1} and api["autonomous"] == 4
    assert {r["kind"] for r in doc["recommendations"]} >= {"keep_in_shadow", "drill_missed", "remove"}
    assert doc["shadow"][0]["same_alerts"][0]["people"] == ["rejected by bob"]


def test_markdown_has_a_section_and_a_table_row_for_everything():
    review = mixed()
    md = as_markdown(review)
    headings = re.findall(r"^#+ (.+)$", md, re.M)
    assert headings == ["selfheal review, last 60d", "Whitelist entries", "Approvers", "Shadow entries", "Drills",
                        "Recommendations"]
    rows = [line for line in md.splitlines() if line.startswith("|")]
    widths = {line.count("|") for line in rows}
    assert widths == {len(ENTRY_COLUMNS) + 1, len(APPROVER_COLUMNS) + 1}  # every row as wide as its header
    for f in review.entries:
        assert any(line.startswith(f"| {f.entry} |") for line in rows)
    for r in review.recommendations:
        assert f"- {r.text}" in md
    assert "warning: --since 60d reaches beyond" in md
    assert "drills: 1 (caught 0, missed 1, unanswered 0); 0 open" in md


def test_the_text_report_shows_the_tables_shadow_evidence_and_recommendations():
    review = mixed()
    console = Console(record=True, width=250, file=io.StringIO())
    as_text(review, console)
    text = console.export_text()
    assert "history reaches back 30 days (the namespace's retention)" in text
    for f in review.entries:
        assert f.entry in text
    assert "rollback-payments: keep in shadow" in text
    assert "same alert: " in text and "rejected by bob" in text
    for r in review.recommendations:
        assert r.text in text.replace("\n", " ") or r.text[:60] in text


@pytest.mark.parametrize("args, message", [
    (["--json", "--markdown"], "exclusive"),
    (["--since", "soon"], "--since soon"),
    (["--since", "0s"], "longer than 0s"),
    (["--whitelist", "/nonexistent/wl.yaml"], "cannot read"),
])
def test_bad_options_are_refused_before_temporal_is_asked(args, message):
    done = CliRunner().invoke(app, ["review", *args, "--address", "127.0.0.1:1"])
    assert done.exit_code == 2, done.output
    assert message in done.output


def test_a_shadow_entry_lists_the_same_alerts_oldest_first_and_text_shows_the_newest():
    from selfheal.cli.review import SAME_ALERTS_SHOWN, shadow_lines

    people = [incident("rollback-checkout", "rejected", key="pay", age=timedelta(minutes=m)) for m in range(SAME_ALERTS_SHOWN + 3)]
    review = build(shadowed(1) + people)
    [s] = review.shadow
    assert [a.incident for a in s.same_alerts] == [r.incident_id for r in reversed(people)]
    lines = shadow_lines(review)
    shown = [line for line in lines if "same alert: " in line]
    assert len(shown) == SAME_ALERTS_SHOWN and people[0].incident_id in shown[-1]
    assert lines[-1].strip() == "and 3 earlier one(s): --json lists them all"
