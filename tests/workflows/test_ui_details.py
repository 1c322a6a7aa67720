"""What the Temporal UI shows of an incident at each stage: the story, and nothing a sender
or a model wrote rendered as Markdown (issue 24)."""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone

from selfheal.contract import (
    ActionRequest, Alert, ApprovalEvent, AuditRecord, Check, Decision, Diagnosis, Hypothesis, RemediationResult,
    Verification, WorldState,
)
from selfheal.workflows.ui_details import approve_lines, current_details

T = datetime(2026, 12, 7, tzinfo=timezone.utc)
HOSTILE = "[approve here](http://evil.example) ```\n# not a heading"


def outside_blocks(text: str) -> str:
    return re.sub(r"```text\n.*?\n```", "", text, flags=re.S)


def record(**more) -> AuditRecord:
    return AuditRecord(
        incident_id="checkout-1", alerts=[Alert(labels={"alertname": "X"}, starts_at=T, fingerprint="f")],
        diagnosis=Diagnosis(rationale=HOSTILE, proposal="rollback-checkout", confidence=0.5,
                            hypotheses=[Hypothesis(id="h1", summary="bad deploy " + HOSTILE)]),
        request=ActionRequest(entry_id="rollback-checkout", target={"cluster": "demo", "service": "checkout",
                                                                     "task_definition": "checkout:6"}),
        decision=Decision.needs_approval("rollback-checkout", "service", 1, ["alice", "bob"]), **more)


def test_a_waiting_incident_names_the_action_the_exact_target_and_who_may_approve_how():
    text = current_details(record(), "awaiting_approval", ["ssh", "slack"])
    assert text.startswith("**awaiting_approval** · 1 alert(s), firing")
    assert "needs_approval: rollback-checkout on checkout:6" in text
    assert "needs 1 approval(s) through ssh, slack from: alice, bob" in text
    assert "approve: selfheal approve checkout-1 --as alice\napprove: selfheal approve checkout-1 --as bob\n" in text


def test_each_approve_line_runs_as_printed_for_its_approver_and_a_confirming_tier_asks_at_the_prompt():
    from typer.testing import CliRunner

    from selfheal.cli import app

    people = ["alice", "bob", "carol", "dave", "erin"]
    lines = approve_lines("checkout.generic-1~ab12", people, confirm=True)
    assert lines[:3] == [f"selfheal approve 'checkout.generic-1~ab12' --as {who} --confirm -" for who in people[:3]]
    assert lines[3] == "(or as any of the 2 other approvers: the same line with their name)"
    assert approve_lines("x", ["alice"]) == ["selfheal approve x --as alice"]
    # Each parses as the CLI's own command line: the id and name arrive whole, the shell's quoting undone.
    for line, who in zip(lines[:3], people):
        argv = shlex.split(line)
        assert argv[:2] == ["selfheal", "approve"]
        assert argv[2] == "checkout.generic-1~ab12" and argv[argv.index("--as") + 1] == who
        # The app the installed script runs: an option approve does not take fails before --help.
        helped = CliRunner().invoke(app, [*argv[1:], "--help"])
        assert helped.exit_code == 0 and "Approve the incident" in helped.output, helped.output


def test_done_says_what_was_done_before_and_after_and_what_verified():
    done = record(remediation=RemediationResult(
        entry_id="rollback-checkout", kind="ecs.rollback", idempotency_key="k", action="executed", detail="rolled back",
        before=WorldState(resource="ecs:demo/checkout", facts={"task_definition": "checkout:7"}),
        after=WorldState(resource="ecs:demo/checkout", facts={"task_definition": "checkout:6"})),
        verification=Verification(ok=True, checks=[Check(name="service steady", ok=True, detail="PRIMARY on :6")]),
        approvals=[ApprovalEvent(kind="approved", approver="alice", at=T, via="update", channel="ssh", verified=True),
                   ApprovalEvent(kind="refused", approver=HOSTILE, at=T, via="signal", note="unmapped " + HOSTILE)],
        outcome="remediated", outcome_detail="verified")
    text = current_details(done, "done")
    assert "before: task_definition=checkout:7" in text and "after:  task_definition=checkout:6" in text
    assert "ok service steady: PRIMARY on :6" in text and "approved by alice via ssh" in text
    assert "**Outcome: remediated**" in text and "refused: " in text


def test_nothing_from_outside_is_rendered_as_markdown():
    done = record(approvals=[ApprovalEvent(kind="refused", approver=HOSTILE, at=T, via="signal", note=HOSTILE)],
                  outcome="denied", outcome_detail=HOSTILE)
    text = current_details(done, "done")
    assert "evil.example" in text  # shown, as text
    assert "evil.example" not in outside_blocks(text) and "# not a heading" not in outside_blocks(text)
    assert text.count("```") == 2 * text.count("```text\n")  # every block closes where selfheal closes it
