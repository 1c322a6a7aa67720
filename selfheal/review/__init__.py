"""``selfheal review``: the evidence for changing the agent's judgment or the whitelist.

Over 300 lines on purpose: every figure and the recommendation that reads it sit together,
with the thresholds they share, so a reader checks one against the other in one place.

Pure: AuditRecords (as incidents and drills returned them), the current whitelist, the
clock and the namespace's retention in; a ``Review`` (figures and plain recommendations)
out. No I/O and no clock of its own: ``selfheal/cli_review.py`` lists, fetches and prints.

What counts where. An incident belongs to the entry its decision names. A drill (its
record has ``drill``, its outcome is ``drill_*``) is never an incident: it counts only in
its approvers' drills caught and missed, and in the drill summary. Escalations say why
people were brought in beyond the entry's declared tier::

    escalation
    ├── no_remedy              the diagnosis proposed nothing usable; counted for every entry the alerts matched
    ├── denied:<rule>          the policy refused (rate_limit, cooldown, bounds.max_capacity, target ...)
    ├── raised:<cause>         the tier rose: autonomy, failure_memory, breaker, pause, model (other: unrecognised)
    ├── verification_failed    it ran and the symptom did not clear
    ├── world_changed          the target moved between the decision and the act; nothing ran
    └── failed                 an activity failed for good

Recommendations, by kind: shrink, denied, unanswered, remove, review_approvals,
unverified, drill_missed, promote, keep_in_shadow.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from statistics import median
from selfheal.contract import AuditRecord
from selfheal.review.models import (ApproverFigures, Counts, DrillSummary, EntryFigures, History, OpenItem, Recommendation,
                                    Review, SameAlert, ShadowFigures)
from selfheal.whitelist.durations import format_duration
from selfheal.whitelist.models import Whitelist

# --- thresholds: each is where a count stops being chance and starts being a pattern ----

# Verification failures that make an entry worth narrowing: one failure is bad luck, two
# that are a third of its runs mean the action is the wrong remedy for part of what it matches.
SHRINK_MIN_FAILURES = 2
SHRINK_FAILURE_SHARE = 1 / 3
# Denials of one entry worth a look: three refusals are a habit of the diagnosis, or a limit
# set tighter than the symptom recurs.
DENIED_MIN = 3
# Approval requests nobody answered in time: two, and half of those asked, say the people or
# the channel asked are the wrong ones; one is a quiet night.
UNANSWERED_MIN = 2
UNANSWERED_SHARE = 1 / 2
# A person's approvals are judged only from this many: fewer say more about chance than habit.
MIN_APPROVALS_TO_JUDGE = 3
# A median approval quicker than this is quicker than reading the evidence and the target.
RUBBER_STAMP_MEDIAN_SECONDS = 10.0
# Half of a person's approvals sooner than the tier's own min_review is the team's own line crossed.
FAST_SHARE = 1 / 2
# One approval that proved nobody (a typed name) is one action nobody can be held to.
UNVERIFIED_MIN = 1
# A drill is built to be caught: one missed is worth a conversation.
DRILL_MISSES_MIN = 1
# Shadowed incidents before promotion is worth proposing: in shadow a wrong call costs
# nothing, so waiting for five is cheap, and fewer are anecdotes.
PROMOTE_MIN_SHADOWED = 5

RAN = ("executed", "already_done")  # the executor acted (now, or an earlier attempt of the same step)
# Each raise as whitelist/policy.py (effective_tier) and workflows/agent_answer.py
# (model_reasons) word it; tests/test_review.py runs the real functions, so a change of
# wording fails there rather than quietly becoming "other".
_RAISES = (("autonomy paused by ", "pause"), ("breaker open since ", "breaker"), ("acting alone on ", "autonomy"),
           ("the model proposed ", "model"), ("parameters chosen by the model", "model"))
_FAILURE_MEMORY = re.compile(r" ended \S+ in incident ")
_RULE = re.compile(r"^\[([^\]]+)\]")
NEVER = datetime.min.replace(tzinfo=timezone.utc)


def is_drill(r: AuditRecord) -> bool:
    return r.drill is not None or (r.outcome or "").startswith("drill_")


def key_of(incident_id: str) -> str:
    """The alert across its episodes: an incident id is ``<key>~<episode>``."""
    return incident_id.rpartition("~")[0] or incident_id


def entry_of(r: AuditRecord) -> str | None:
    return r.decision.entry_id if r.decision else r.request.entry_id if r.request else None


def raise_cause(reason: str) -> str:
    for prefix, cause in _RAISES:
        if reason.startswith(prefix):
            return cause
    return "failure_memory" if _FAILURE_MEMORY.search(reason) else "other"


def denial_rule(r: AuditRecord) -> str:
    if r.decision is not None and r.decision.kind == "deny" and r.decision.rule:
        return r.decision.rule
    found = _RULE.match(r.outcome_detail)  # refused at the reservation: "[rate_limit] ..."
    return found.group(1) if found else "unknown"


def escalations(r: AuditRecord) -> list[str]:
    out = {"no_remedy": ["no_remedy"], "denied": [f"denied:{denial_rule(r)}"], "failed": ["failed"],
           "verification_failed": ["verification_failed"], "world_changed": ["world_changed"]}.get(r.outcome or "", [])
    raised = r.decision.raised_by if r.decision else []
    return out + sorted({f"raised:{raise_cause(why)}" for why in raised})


def approved(r: AuditRecord) -> bool:
    d = r.decision
    return (d is not None and d.kind == "needs_approval"
            and len({e.approver for e in r.approvals if e.kind == "approved"}) >= max(d.approvals, 1))


def _ran(r: AuditRecord) -> bool:
    return r.remediation is not None and r.remediation.action in RAN


def _people(r: AuditRecord) -> list[str]:
    return [f"{e.kind} by {e.approver}" for e in r.approvals if e.kind in ("approved", "rejected")]


def days(n: float) -> str:
    return f"{n:g} day" + ("" if n == 1 else "s")


def _add(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


# --- the figures -------------------------------------------------------------------------

def entry_figures(real: list[AuditRecord], whitelist: Whitelist | None, opened: list[OpenItem]) -> list[EntryFigures]:
    listed = whitelist.entries if whitelist else []
    rows: dict[str, EntryFigures] = {e.id: EntryFigures(entry=e.id, mode=e.mode) for e in listed}

    def row(entry: str) -> EntryFigures:
        return rows.setdefault(entry, EntryFigures(entry=entry))

    for r in real:
        entry = entry_of(r)
        if entry is None:
            for matched in r.matched_entries:
                for reason in escalations(r):
                    _add(row(matched).escalations, reason)
            continue
        f = row(entry)
        f.incidents += 1
        f.last_incident = max(filter(None, [f.last_incident, r.started_at]), default=None)
        kind = r.decision.kind if r.decision else None
        f.autonomous += kind == "auto" and _ran(r)
        f.asked += kind == "needs_approval" and r.outcome != "shadowed"
        f.approved += approved(r)
        f.rejected += r.outcome == "rejected"
        f.expired += r.outcome == "expired"
        f.remediated += r.outcome == "remediated"
        f.verification_failed += r.outcome == "verification_failed"
        f.shadowed += r.outcome == "shadowed"
        if r.outcome == "denied":
            _add(f.denials, denial_rule(r))
        if r.outcome != "shadowed":  # a shadow decision brought nobody in
            for reason in escalations(r):
                _add(f.escalations, reason)
    for item in opened:
        if not item.drill and item.entry:
            row(item.entry).open += 1
    order = list(rows)  # the whitelist's order first, then entries it no longer has
    return sorted(rows.values(), key=lambda f: (f.mode is None, order.index(f.entry) if f.mode else f.entry))


def approver_figures(real: list[AuditRecord], drills: list[AuditRecord]) -> list[ApproverFigures]:
    rows: dict[str, ApproverFigures] = {}
    times: dict[str, list[float]] = {}
    for r in real:
        for e in r.approvals:
            f = rows.setdefault(e.approver, ApproverFigures(person=e.approver))
            if e.kind == "approved":
                f.approved += 1
                f.fast += e.fast
                f.unverified += not e.verified
                if e.after_seconds is not None:
                    times.setdefault(e.approver, []).append(e.after_seconds)
            elif e.kind == "rejected":
                f.rejected += 1
            elif e.kind == "refused":
                f.refused += 1
            else:  # "unverified": a typed name the tier did not count
                f.unverified += 1
    for r in drills:
        for person, verdict in (r.drill.verdicts if r.drill else {}).items():
            f = rows.setdefault(person, ApproverFigures(person=person))
            f.drills_caught += verdict == "caught"
            f.drills_missed += verdict == "missed"
    for person, f in rows.items():
        if f.approved + f.rejected:
            f.approve_rate = f.approved / (f.approved + f.rejected)
        if times.get(person):
            f.median_seconds_to_approve = median(times[person])
    return sorted(rows.values(), key=lambda f: f.person)


def shadow_figures(real: list[AuditRecord]) -> list[ShadowFigures]:
    shadowed: dict[str, list[AuditRecord]] = {}
    for r in real:
        if r.outcome == "shadowed" and entry_of(r):
            shadowed.setdefault(entry_of(r), []).append(r)
    out = []
    for entry, records in sorted(shadowed.items()):
        would: dict[str, int] = {"auto": 0, "needs_approval": 0, "deny": 0}
        deny_rules: dict[str, int] = {}
        for r in records:
            _add(would, r.decision.kind if r.decision else "deny")
            if r.decision is None or r.decision.kind == "deny":
                _add(deny_rules, denial_rule(r))
        keys = sorted({key_of(r.incident_id) for r in records})
        same = sorted((r for r in real if r.outcome != "shadowed" and key_of(r.incident_id) in keys),
                      key=lambda r: (r.started_at or NEVER, r.incident_id))
        f = ShadowFigures(entry=entry, shadowed=len(records), would=would, would_deny_rules=deny_rules, alerts=keys,
                          same_alerts=[SameAlert(incident=r.incident_id, entry=entry_of(r), outcome=r.outcome, people=_people(r))
                                       for r in same], verdict="keep", evidence=[])
        for r in same:
            mine = entry_of(r) == entry
            f.agreed += mine and r.outcome == "remediated"
            f.rejected += mine and r.outcome == "rejected"
            f.failed += mine and r.outcome == "verification_failed"
            f.other += not mine
        _judge_shadow(f)
        out.append(f)
    return out


def _judge_shadow(f: ShadowFigures) -> None:
    denied = f"; {', '.join(f'{k} {v}' for k, v in sorted(f.would_deny_rules.items()))}" if f.would_deny_rules else ""
    f.evidence.append(f"{f.shadowed} shadowed incident(s) on {len(f.alerts)} alert(s): would have run by itself "
                      f"{f.would['auto']}, after approval {f.would['needs_approval']}, been denied {f.would['deny']}{denied}")
    f.evidence.append(f"the same alerts for real: {len(f.same_alerts)} incident(s); {f.entry} cleared it {f.agreed}, "
                      f"was rejected {f.rejected}, failed verification {f.failed}; another entry or nothing {f.other}")
    keep = []
    if f.shadowed < PROMOTE_MIN_SHADOWED:
        keep.append(f"only {f.shadowed} shadowed incident(s) (promotion wants {PROMOTE_MIN_SHADOWED})")
    if f.would["deny"]:
        keep.append(f"it would have been denied {f.would['deny']} time(s)")
    if f.rejected:
        keep.append(f"people rejected it for the same alert {f.rejected} time(s)")
    if f.failed:
        keep.append(f"it failed verification for the same alert {f.failed} time(s)")
    f.verdict = "keep" if keep else "promote"
    f.evidence.extend(keep)


# --- the recommendations -----------------------------------------------------------------

def recommendations(entries: list[EntryFigures], approvers: list[ApproverFigures], shadow: list[ShadowFigures],
                    span: str) -> list[Recommendation]:
    recs: list[Recommendation] = []

    def rec(kind, subject, text) -> None:
        recs.append(Recommendation(kind=kind, subject=subject, text=text))

    for f in entries:
        runs = f.remediated + f.verification_failed
        if f.verification_failed >= SHRINK_MIN_FAILURES and f.verification_failed >= SHRINK_FAILURE_SHARE * runs:
            rec("shrink", f.entry, f"shrink: {f.entry} failed verification {f.verification_failed} of {runs} times")
        denied = sum(f.denials.values())
        if denied >= DENIED_MIN:
            rules = ", ".join(f"{k} {v}" for k, v in sorted(f.denials.items()))
            rec("denied", f.entry, f"denied: {f.entry} was refused {denied} times ({rules}): a limit tighter than the "
                                   "symptom recurs, or a diagnosis proposing it where it does not fit")
        if f.expired >= UNANSWERED_MIN and f.expired >= UNANSWERED_SHARE * f.asked:
            rec("unanswered", f.entry, f"unanswered: nobody answered {f.entry} in time {f.expired} of {f.asked} times: "
                                       "check who is asked, and how")
        if f.mode is not None and f.incidents == 0 and f.open == 0:
            unproposed = f.escalations.get("no_remedy")
            matched = f" (its alerts matched {unproposed} time(s), never proposed)" if unproposed else ""
            rec("remove", f.entry, f"never used in {span}: {f.entry}{matched}: remove?")
    for p in approvers:
        if p.approved >= MIN_APPROVALS_TO_JUDGE:
            quick = p.median_seconds_to_approve is not None and p.median_seconds_to_approve < RUBBER_STAMP_MEDIAN_SECONDS
            if quick or p.fast >= FAST_SHARE * p.approved:
                seconds = "unknown time" if p.median_seconds_to_approve is None else f"{p.median_seconds_to_approve:.0f} s"
                rec("review_approvals", p.person, f"approved in a median of {seconds} by {p.person} ({p.fast} of "
                                                  f"{p.approved} sooner than the tier's min_review): review what the approval shows")
        if p.unverified >= UNVERIFIED_MIN:
            rec("unverified", p.person, f"unverified: {p.unverified} approval(s) by {p.person} proved nobody (a typed "
                                        "name): sign them, or take unverified out of the tier's channels")
        if p.drills_missed >= DRILL_MISSES_MIN:
            rec("drill_missed", p.person, f"drills missed by {p.person}: approved {p.drills_missed} of "
                                          f"{p.drills_missed + p.drills_caught} drill(s): go through what those requests showed")
    for s in shadow:
        if s.verdict == "promote":
            rec("promote", s.entry, f"promote: {s.entry}: " + "; ".join(s.evidence))
        else:
            rec("keep_in_shadow", s.entry, f"keep in shadow: {s.entry}: " + "; ".join(s.evidence[2:]))
    return recs


def build_review(records: list[AuditRecord], *, whitelist: Whitelist | None, now: datetime, since: timedelta,
                 retention_days: float | None, opened: list[OpenItem] = (), unreadable: list[str] = (),
                 limit: int | None = None, limit_reached: bool = False) -> Review:
    """The review of ``records`` that started within ``since`` before ``now``."""
    retention = timedelta(days=retention_days) if retention_days else None
    beyond = retention is not None and since > retention
    covers = now - (min(since, retention) if retention else since)
    within = [r for r in records if r.started_at is None or r.started_at >= now - since]
    drills = [r for r in within if is_drill(r)]
    real = [r for r in within if not is_drill(r)]
    opened = list(opened)
    entries = entry_figures(real, whitelist, opened)
    approvers = approver_figures(real, drills)
    shadow = shadow_figures(real)
    span = format_duration(min(since, retention) if retention else since)
    warnings = []
    if beyond:
        warnings.append(f"--since {format_duration(since)} reaches beyond the namespace's retention "
                        f"({days(retention_days)}): incidents that closed before then are gone, so this review covers {span}")
    if limit_reached:
        warnings.append(f"stopped at --limit {limit}: older incidents in the window were not read")
    if unreadable:
        warnings.append(f"{len(unreadable)} closed workflow(s) left no audit record (failed, terminated or timed out)")
    return Review(
        generated_at=now, since=format_duration(since),
        history=History(since_seconds=since.total_seconds(), retention_days=retention_days, beyond_retention=beyond,
                        covers_from=covers),
        counts=Counts(incidents=len(real), drills=len(drills), open_incidents=sum(not o.drill for o in opened),
                      open_drills=sum(o.drill for o in opened), unreadable=list(unreadable),
                      unmatched=sum(entry_of(r) is None and not r.matched_entries for r in real),
                      limit=limit, limit_reached=limit_reached),
        entries=entries, approvers=approvers, shadow=shadow,
        drills=DrillSummary(drills=len(drills), caught=sum(r.outcome == "drill_caught" for r in drills),
                            missed=sum(r.outcome == "drill_missed" for r in drills),
                            unanswered=sum(r.outcome == "drill_unanswered" for r in drills),
                            open=sum(o.drill for o in opened)),
        recommendations=recommendations(entries, approvers, shadow, span),
        warnings=warnings,
    )
