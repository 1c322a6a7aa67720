"""What the Temporal UI shows as an incident's current details, at every stage.

Pure (the workflow calls it whenever its status changes); the UI reads it through a query,
so it shows only while a worker runs (the static details, set by the ingress at start,
always show). The UI renders Markdown: the headings here are selfheal's, and everything
that came from outside (alert text, a diagnosis, a model's words, a name someone typed)
sits in a fenced code block, shown as written.
"""

from __future__ import annotations

import re
import shlex

from selfheal.contract import AuditRecord
from selfheal.identity import attest

MAX_TEXT = 1_500  # characters of one block of untrusted text
MAX_REFUSALS_SHOWN = 5
MAX_APPROVE_LINES = 3  # one per approver, the first few: a long list would bury the evidence


def approve_line(incident_id: str, who: str, confirm: bool, command: str = "selfheal", key: str | None = None,
                 where: str = "") -> str:
    """The one shape of a printed ``selfheal approve`` line, runnable as printed (here, and
    ``selfheal dev``'s with its demo keys): with no ``key``, the approver's default (ssh-agent,
    then ``~/.ssh/id_ed25519``); where the tier asks to confirm the target, ``--confirm -``
    asks for it at the prompt, so the person still types it (a line that carried the target
    would make confirming a paste)."""
    return (f"{command} approve {shlex.quote(incident_id)} --as {shlex.quote(who)}"
            + (f" --key {shlex.quote(key)}" if key else "") + (" --confirm -" if confirm else "")
            + (f" {where}" if where else ""))


def approve_lines(incident_id: str, approvers: list[str], confirm: bool = False) -> list[str]:
    """``approve_line`` for each of the first approvers."""
    lines = [approve_line(incident_id, who, confirm) for who in approvers[:MAX_APPROVE_LINES]]
    if len(approvers) > MAX_APPROVE_LINES:
        lines.append(f"(or as any of the {len(approvers) - MAX_APPROVE_LINES} other approvers: the same line with their name)")
    return lines


def block(text: str) -> str:
    """``text`` as a fenced code block no fence inside it can close."""
    text = re.sub(r"`{3,}", lambda m: "\u200b".join(m.group(0)), text)[:MAX_TEXT]
    return f"```text\n{text}\n```"


def _state(state) -> str:
    if state is None:
        return "-"
    facts = getattr(state, "facts", None)
    if facts is not None:
        return ", ".join(f"{k}={v}" for k, v in sorted(facts.items()) if not isinstance(v, list))[:300] or state.resource
    return f"{getattr(state, 'active_state', '?')}/{getattr(state, 'sub_state', '?')}"


def current_details(a: AuditRecord, status: str, channels: list[str] | None = None, confirm: bool = False) -> str:
    parts = [f"**{status}** · {len(a.alerts)} alert(s), {'resolved' if a.resolved else 'firing'}"]
    if a.diagnosis is not None:
        said = a.diagnosis.rationale + (f"\nproposes: {a.diagnosis.proposal}" if a.diagnosis.proposal else "")
        cited = [f"- {h.summary}" for h in a.diagnosis.hypotheses[:3]]
        parts.append("**Concluded** (for people only: the decision never reads it)\n\n"
                     + block("\n".join([said, *cited])))
    if a.decision is not None:
        d = a.decision
        target = attest.confirmation_text(a.request) if a.request is not None else "-"
        params = ", ".join(f"{k}={v}" for k, v in sorted(a.request.params.items())) if a.request else ""
        lines = [f"{d.kind}: {d.entry_id} on {target}" + (f" ({params})" if params else "")]
        if d.kind == "needs_approval":
            how = f" through {', '.join(channels)}" if channels else ""
            lines.append(f"needs {d.approvals} approval(s){how} from: {', '.join(d.approvers)}")
            lines += [f"approve: {line}" for line in approve_lines(a.incident_id, d.approvers, confirm)]
        if d.raised_by:
            lines.append("raised from " + (d.declared_tier or "?") + ": " + "; ".join(d.raised_by))
        if d.kind == "deny":
            lines.append(f"denied [{d.rule}]: {d.reason}")
        parts.append("**Decided**\n\n" + block("\n".join(lines)))
    counted = [e for e in a.approvals if e.kind in ("approved", "rejected")]
    refused = [e for e in a.approvals if e.kind not in ("approved", "rejected")]
    if counted or refused:
        lines = [f"{e.kind} by {e.approver} via {e.channel}" + ("" if e.verified else " (not verified)") for e in counted]
        lines += [f"refused: {e.approver} via {e.channel}: {e.note[:200]}" for e in refused[-MAX_REFUSALS_SHOWN:]]
        if len(refused) > MAX_REFUSALS_SHOWN or a.refusals_not_recorded:
            lines.append(f"({len(refused) - min(len(refused), MAX_REFUSALS_SHOWN) + a.refusals_not_recorded} more refusal(s))")
        parts.append("**People**\n\n" + block("\n".join(lines)))
    if a.remediation is not None:
        r = a.remediation
        lines = [f"{r.action}: {r.detail}", f"before: {_state(r.before)}", f"after:  {_state(r.after)}"]
        if a.verification is not None:
            lines += [f"{'ok' if c.ok else 'FAILED'} {c.name}: {c.detail}" for c in a.verification.checks]
        parts.append("**Done**\n\n" + block("\n".join(lines)))
    if a.outcome:
        parts.append(f"**Outcome: {a.outcome}**\n\n" + block(a.outcome_detail))
    return "\n\n".join(parts)
