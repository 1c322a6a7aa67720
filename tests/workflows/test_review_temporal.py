"""`selfheal review` on real incidents and drills: one acted alone, one rejected (its drill
caught), one approved (its drill missed), one expired (its drill unanswered), one shadowed
for an alert people had answered, and one still waiting. The review reads them through
Temporal visibility and says how far back the namespace's history reaches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from selfheal.cli.review import review_with
from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.review import Review, days
from selfheal.contract import IncidentSettings
from selfheal.whitelist import load_whitelist
from selfheal.workflows.drill import DrillWorkflow
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import FAST, alert, drill_of, running_worker, settings_for, start_incident, wait_for, wait_status
from tests.workflows.test_drills import PAYMENTS
from tests.workflows.test_incident_aws import RULES, WHITELIST

ROOT = Path(__file__).resolve().parents[2]
# Short approval timers, so one incident expires within the test; the others are answered at once.
QUICK = IncidentSettings(**{**FAST.model_dump(), "remind_after": timedelta(seconds=2),
                            "escalate_after": timedelta(seconds=4), "expire_after": timedelta(seconds=6)})
PAYMENTS_RULE = """  - id: payments-errors
    summary: payments errors after a deploy
    match: ['alertname="PaymentsErrorRate"']
    propose: rollback-payments
"""


def whitelists(tag: str) -> tuple[str, str, str]:
    """Active and shadow whitelists (drills on, min_review 1h) and rules, with this test's own
    entry and people names: the dev server holds every test's incidents, the review reads them all."""
    active = (WHITELIST.replace("entries:\n", "drills: {rate: 1}\nentries:\n" + PAYMENTS, 1)
              .replace("  service: {approvals: 1, channels: [ssh, slack, token, unverified]}",
                       "  service: {approvals: 1, channels: [ssh, slack, token, unverified], min_review: 1h}"))
    rules = RULES + PAYMENTS_RULE
    for name in ("rollback-checkout", "scale-queue-workers", "reboot-batch-hosts", "rollback-payments", "alice", "bob"):
        active, rules = active.replace(name, f"{name}-{tag}"), rules.replace(name, f"{name}-{tag}")
    shadow = active.replace(f"  - id: rollback-checkout-{tag}\n    kind: ecs.rollback\n",
                            f"  - id: rollback-checkout-{tag}\n    kind: ecs.rollback\n    mode: shadow\n")
    assert "min_review: 1h" in active and "drills: {rate: 1}" in active and shadow.count("mode: shadow") == 1
    return active, shadow, rules


async def answer(client, handle, drill_update, drill_person, update, person) -> None:
    """Answer an incident's drill, then the incident itself."""
    await wait_status(handle, "awaiting_approval")
    drill = client.get_workflow_handle(await drill_of(handle), result_type=AuditRecord)
    await wait_status(drill, "awaiting_approval")
    message = Approval if drill_update == "approve" else Rejection
    await drill.execute_update(getattr(DrillWorkflow, drill_update), message(approver=drill_person))
    message = Approval if update == "approve" else Rejection
    await handle.execute_update(getattr(IncidentWorkflow, update), message(approver=person))


async def test_review_counts_real_incidents_drills_and_shadow_evidence(client, task_queue, tmp_path, aws_world):
    tag = uuid.uuid4().hex[:6]
    active, shadow, rules = whitelists(tag)
    alice, bob, checkout, key = f"alice-{tag}", f"bob-{tag}", f"rollback-checkout-{tag}", f"rv-{tag}-checkout"

    settings = settings_for(tmp_path, "unused.service", task_queue, None, incident=QUICK, whitelist=active, rules=rules)
    async with running_worker(client, settings, aws=aws_world.clients()):
        alone = await start_incident(client, task_queue, alert("QueueBacklogHigh"), incident_id=f"rv-{tag}-queue~000000000001")
        late = await start_incident(client, task_queue, alert("CheckoutErrorRate"), incident_id=f"rv-{tag}-late~000000000001")
        no = await start_incident(client, task_queue, alert("CheckoutErrorRate"), incident_id=f"{key}~000000000001")
        yes = await start_incident(client, task_queue, alert("CheckoutErrorRate"), incident_id=f"{key}~000000000002")
        await asyncio.gather(answer(client, no, "reject", bob, "reject", alice),
                             answer(client, yes, "approve", alice, "approve", bob))
        late_drill = client.get_workflow_handle(await drill_of(late), result_type=AuditRecord)
        outcomes = [(await h.result()).outcome for h in (alone, late, no, yes, late_drill)]
    assert outcomes == ["remediated", "expired", "rejected", "remediated", "drill_unanswered"]

    # Later, the team put the checkout rollback in shadow: the same alert's next episode is shadowed.
    settings = settings_for(tmp_path, "unused.service", f"{task_queue}-b", None, whitelist=shadow, rules=rules)
    async with running_worker(client, settings, aws=aws_world.clients()):
        shadowed: AuditRecord = await (await start_incident(client, f"{task_queue}-b", alert("CheckoutErrorRate"),
                                                            incident_id=f"{key}~000000000003")).result()
        waiting = await start_incident(client, f"{task_queue}-b", alert("PaymentsErrorRate"), incident_id=f"rv-{tag}-pay~000000000001")
        await wait_status(waiting, "awaiting_approval")
        current = load_whitelist(settings.whitelist).whitelist

        async def reviewed() -> Review | None:  # visibility catches up with the closes within moments
            review = await review_with(client, timedelta(hours=1), 5000, current)
            mine = {f.entry: f for f in review.entries}
            done = mine[checkout].incidents == 4 and mine[f"rollback-payments-{tag}"].open
            return review if done and {p.person for p in review.approvers} >= {alice, bob} else None

        review: Review = await wait_for(reviewed, timeout=30, interval=0.5)
        far: Review = await review_with(client, timedelta(days=review.history.retention_days + 1), 5000, current)
        cli = Path(sys.executable).parent / "selfheal"
        printed = subprocess.run([str(cli), "review", "--since", "1h", "--whitelist", settings.whitelist, "--address",
                                  client.service_client.config.target_host], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "COLUMNS": "250"}, cwd=ROOT)
        await waiting.execute_update(IncidentWorkflow.reject, Rejection(approver=alice))
        assert (await waiting.result()).outcome == "rejected"
    assert shadowed.outcome == "shadowed"

    entries = {f.entry: f for f in review.entries}
    c = entries[checkout]
    assert c.mode == "shadow"  # as the current whitelist has it
    assert (c.incidents, c.asked, c.approved, c.rejected, c.expired, c.remediated, c.shadowed) == (4, 3, 1, 1, 1, 1, 1)
    scale = entries[f"scale-queue-workers-{tag}"]
    assert (scale.incidents, scale.autonomous, scale.asked, scale.remediated) == (1, 1, 0, 1)
    payments = entries[f"rollback-payments-{tag}"]
    assert (payments.incidents, payments.open) == (0, 1)  # two drills proposed it: they are no incidents of it
    assert review.counts.open_incidents >= 1

    people = {p.person: p for p in review.approvers}
    a, b = people[alice], people[bob]
    assert (a.approved, a.rejected, a.drills_missed, a.drills_caught) == (0, 1, 1, 0)  # the drill approval is no approval
    assert (b.approved, b.rejected, b.drills_caught, b.drills_missed) == (1, 0, 1, 0)
    assert b.fast == 1 and b.unverified == 1 and b.approve_rate == 1.0
    assert 0 <= b.median_seconds_to_approve < 3600
    assert review.drills.missed >= 1 and review.drills.caught >= 1 and review.drills.unanswered >= 1

    [s] = [s for s in review.shadow if s.entry == checkout]
    assert s.shadowed == 1 and s.alerts == [key] and s.would["needs_approval"] == 1
    assert sorted(a.incident for a in s.same_alerts) == [f"{key}~000000000001", f"{key}~000000000002"]
    assert (s.agreed, s.rejected, s.verdict) == (1, 1, "keep")

    recs = {(r.kind, r.subject) for r in review.recommendations}
    assert {("drill_missed", alice), ("unverified", bob), ("remove", f"reboot-batch-hosts-{tag}"),
            ("keep_in_shadow", checkout)} <= recs
    assert not recs & {("drill_missed", bob), ("review_approvals", bob), ("remove", checkout),
                       ("remove", f"rollback-payments-{tag}"), ("remove", f"scale-queue-workers-{tag}")}

    # (other tests' workflows share the server: only the retention warning is this test's to assert on)
    assert review.history.retention_days and review.history.beyond_retention is False
    assert not any("retention" in w for w in review.warnings)
    assert far.history.beyond_retention is True and "reaches beyond the namespace's retention" in far.warnings[0]

    assert printed.returncode == 0, printed.stderr
    print(printed.stdout)
    out = printed.stdout
    assert f"history reaches back {days(review.history.retention_days)} (the namespace's retention)" in out
    assert f"{checkout}: keep in shadow" in out and f"drills missed by {alice}" in out
    assert f"never used in 1h: reboot-batch-hosts-{tag}: remove?" in out
