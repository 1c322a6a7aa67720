"""An AuditRecord as text people read: in a terminal, or pasted into a ticket as Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI imports the contract when a command needs it
    from selfheal.contract import AuditRecord


def sections(r: AuditRecord) -> list[tuple[str, list[str]]]:
    observed = [
        f"{a.status} {a.labels.get('alertname', '?')} from {a.source} at {a.starts_at.isoformat()} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(a.labels.items()) if k != 'alertname')})"
        for a in r.alerts
    ] or ["no alerts"]
    if r.alerts_not_recorded:
        observed.append(f"and {r.alerts_not_recorded} more alerts, not listed here (the workflow history has them)")
    if r.resolved:
        observed.append("the alerts resolved")

    concluded: list[str] = []
    if r.diagnosis:
        d = r.diagnosis
        concluded.append(f"{d.rationale}; confidence {d.confidence:.0%} (for people; the policy never sees it)")
        for h in d.hypotheses:
            concluded.append(f"hypothesis {h.id}: {h.summary} -> proposes {h.proposal or 'nothing'}")
            for ev in h.evidence:
                for line in ev.lines[-3:]:
                    concluded.append(f"    [{ev.source}] {line}")
    if r.agent is not None:  # a model diagnosed beside the rules: what it did, and what it was refused
        a = r.agent
        concluded.append(f"model: {'FAILED: ' if a.failed else ''}{a.note} ({a.steps} turn(s), "
                         f"{a.transcript_bytes} bytes of transcript)")
        concluded.append(f"model read: {', '.join(a.reads) or 'nothing'}")
        concluded.extend(f"model refused: {why}" for why in a.refused)
    if r.rules_diagnosis is not None:
        rd = r.rules_diagnosis
        params = ", ".join(f"{k}={v}" for k, v in sorted(rd.params.items()))
        concluded.append(f"the rules concluded: {rd.rationale} -> proposes {rd.proposal or 'nothing'}"
                         + (f" ({params})" if params else ""))
    concluded.append(f"entries the alerts matched: {', '.join(r.matched_entries) or 'none'}")
    if r.proposal_note:
        concluded.append(r.proposal_note)

    decided = [f"whitelist {r.whitelist_source} sha256 {r.whitelist_sha256}"] if r.whitelist_sha256 else []
    if r.reserved_under_sha256 and r.reserved_under_sha256 != r.whitelist_sha256:
        decided.append(f"decided again right before acting under the reloaded whitelist sha256 {r.reserved_under_sha256}")
    if r.request:
        target = ", ".join(f"{k}={v}" for k, v in r.request.target.items())
        params = ", ".join(f"{k}={v}" for k, v in r.request.params.items()) or "none"
        decided.append(f"request: {r.request.entry_id} on {target}; parameters: {params}")
    if r.decision:
        decided.append(f"decision: {r.decision}")
    decided = decided or ["nothing decided"]

    approved = [
        f"{e.at.isoformat()} {e.kind} by {e.approver} via {e.via}"
        + f" [{e.channel}, {'verified' if e.verified else 'not verified'}"
        + (f", {e.after_seconds:.0f}s after the request" if e.after_seconds is not None else "")
        + (", FAST: sooner than the tier's min_review]" if e.fast else "]")
        + (f": {e.note}" if e.note else "") for e in r.approvals
    ] or ["no approvals"]

    done = [r.remediation.detail + f" (key {r.remediation.idempotency_key})"] if r.remediation else ["nothing was done"]
    verified = (
        [f"{'ok' if c.ok else 'FAILED'} {c.name}: {c.detail}" for c in r.verification.checks] if r.verification else ["not verified"]
    )
    outcome = [f"{r.outcome or 'open'}: {r.outcome_detail}" if r.outcome else f"open, {r.status}"]
    outcome += [f"notified {n.kind} at {n.at.isoformat()}: {n.detail}" for n in r.notifications]
    return [
        ("Observed", observed), ("Concluded", concluded), ("Decided", decided), ("Approved", approved),
        ("Done", done), ("Verified", verified), ("Outcome", outcome),
    ]


def as_text(r: AuditRecord) -> str:
    out = [f"Incident {r.incident_id} — {r.outcome or r.status}"]
    for title, lines in sections(r):
        out.append(f"\n{title}:")
        out.extend(f"  {line}" for line in lines)
    return "\n".join(out)


def as_markdown(r: AuditRecord) -> str:
    out = [f"## Incident `{r.incident_id}` — {r.outcome or r.status}"]
    for title, lines in sections(r):
        out.append(f"\n### {title}\n")
        out.extend(f"- {line.strip()}" if not line.startswith("    ") else f"  - `{line.strip()}`" for line in lines)
    return "\n".join(out) + "\n"
