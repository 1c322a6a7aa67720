"""What the incident and drill workflows count, through ``workflow.metric_meter()``.

The SDK's workflow meter skips replays, so a worker that rebuilds an incident from its
history after a restart does not count it twice. A query does not count as a replay,
though: a query that reaches an incident this worker no longer holds (no cache, or one
too small for the incidents running) rebuilds it from history, runs whatever events no
workflow task has handled yet as new, and then the task that handles them runs them again
(measured: 18 of 40 bare workflows queried while they ran counted a step twice with no
cache; none with one that held them all). The SDK tells the two runs apart by nothing the
workflow can read, so each count here is made once per run in this process (``_first``;
the process's memory of it, ``selfheal.once``, lives outside this package, whose modules
hold no state). Two workers can still each count one step once: the query on one and the
task on the other, only while incidents outnumber their caches. The worker exports these
(with the SDK's own metrics) at ``/metrics`` (``selfheal.metrics``). Names and labels are an
interface: deploy/ dashboards and alert rules use them. Label values come from the
whitelist (entry ids, tiers) or from fixed vocabularies (outcomes, actions), never from
alert text, so a storm of odd alerts cannot blow up the number of series.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

from selfheal.contract import ApprovalEvent, AuditRecord
from selfheal.once import Once

INCIDENTS = "selfheal_incidents"                       # counter {outcome, entry}
DECISION_SECONDS = "selfheal_decision_seconds"         # histogram {decision}: incident start -> decision
APPROVAL_SECONDS = "selfheal_approval_seconds"         # histogram {tier}: approval requested -> approval given
ACTIONS = "selfheal_actions"                           # counter {entry, result}
VERIFICATION_FAILURES = "selfheal_verification_failures"  # counter {entry}
DRILLS = "selfheal_drills"                             # counter {entry, verdict}: caught, missed, unanswered
DRILL_VERDICTS = "selfheal_drill_verdicts"             # counter {entry, person, verdict}: each person asked
FAST_APPROVALS = "selfheal_fast_approvals"             # counter {tier}: sooner than the tier's min_review
UNDELIVERED = "selfheal_notifications_undelivered"     # counter {notifier}: refused (a 400) or out of retries
NONE = "none"
# What this process has counted, 1.6 MB at most (measured). A count need be remembered only
# from a query's run of new events to the task's run of the same events: seconds, while
# 10,000 counts are those of some 3,000 incidents.
COUNTED = Once(keep=10_000)


def _first(*step: object) -> bool:
    """Whether this run has not counted ``step`` in this process yet (and now has).

    Every workflow run in the process asks the one ``COUNTED``. A replay counts nothing
    (the meter would drop it) and leaves no mark."""
    return not workflow.unsafe.is_replaying() and COUNTED.first((workflow.info().run_id, *step))


def _entry(audit: AuditRecord) -> str:
    """The entry the incident belongs to, as ``selfheal review`` counts it (``review.entry_of``):
    the one its decision names. A proposal the alerts did not match was never decided on (the
    incident ended ``no_remedy``), so it is no incident of that entry: ``none``."""
    if audit.decision is not None:
        return audit.decision.entry_id
    if audit.request is not None:
        return audit.request.entry_id
    return NONE


def decided(audit: AuditRecord, now: datetime) -> None:
    """The policy decided (auto, needs_approval or deny)."""
    if audit.decision is None or audit.started_at is None or not _first("decided"):
        return
    workflow.metric_meter().create_histogram_float(
        DECISION_SECONDS, "seconds from the first alert's incident start to the policy's decision", "s",
    ).record(max(0.0, (now - audit.started_at).total_seconds()), {"decision": audit.decision.kind})


def answered(event: ApprovalEvent, tier: str | None, nth: int) -> None:
    """An approval that counted: how long after the request, and whether it was fast.
    ``nth`` is its place among the run's answers (one person may approve a request raised
    again), the same in every run of these events."""
    if event.kind != "approved" or event.after_seconds is None or not _first("answered", nth):
        return
    meter, labels = workflow.metric_meter(), {"tier": tier or NONE}
    meter.create_histogram_float(APPROVAL_SECONDS, "seconds from the approval request to an approval", "s").record(
        max(0.0, event.after_seconds), labels)
    if event.fast:
        meter.create_counter(FAST_APPROVALS, "approvals given sooner than the tier's min_review").add(1, labels)


def ended(audit: AuditRecord) -> None:
    """The incident ended: its outcome, what ran, whether it verified. A drill is counted
    as a drill only: it is no incident, and its entry was never proposed for real."""
    if not _first("ended"):
        return
    meter, entry = workflow.metric_meter(), _entry(audit)
    if audit.drill is not None:
        return _drill_ended(audit, meter, entry)
    meter.create_counter(INCIDENTS, "incidents by outcome").add(1, {"outcome": audit.outcome or NONE, "entry": entry})
    if audit.remediation is not None:
        meter.create_counter(ACTIONS, "remediation actions by entry and result").add(
            1, {"entry": audit.remediation.entry_id, "result": audit.remediation.action})
    if audit.outcome == "verification_failed":
        meter.create_counter(VERIFICATION_FAILURES, "actions that ran but did not clear the symptom").add(1, {"entry": entry})


def _drill_ended(audit: AuditRecord, meter, entry: str) -> None:
    verdict = audit.outcome.removeprefix("drill_") if audit.outcome else NONE
    meter.create_counter(DRILLS, "approval drills by verdict").add(1, {"entry": entry, "verdict": verdict})
    # Per person asked: one who approved a drill that someone else then rejected missed it,
    # though the drill as a whole was caught; one who did not answer let it pass unread.
    asked = audit.decision.approvers if audit.decision is not None else []
    counter = meter.create_counter(DRILL_VERDICTS, "each person's answer to an approval drill")
    for person in sorted(set(asked) | set(audit.drill.verdicts)):
        counter.add(1, {"entry": entry, "person": person, "verdict": audit.drill.verdicts.get(person, "unanswered")})


def undelivered(notifier: str, nth: int) -> None:
    """A notification that did not reach its notifier: deploy/'s rules alert on it. ``nth``
    is the run's count of notifications before it, the same in every run of these events."""
    if not _first("undelivered", notifier, nth):
        return
    workflow.metric_meter().create_counter(UNDELIVERED, "notifications a notifier refused or never took").add(
        1, {"notifier": notifier})
