"""Approvals that prove who approved: SSH-signed statements, checked by the workflow.

Real Temporal, a real systemd unit, keys made by ssh-keygen and signatures made by
``ssh-keygen -Y sign`` (through the CLI, or directly for the forged cases).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError

from selfheal.identity import attest
from selfheal.contract import Approval, AuditRecord, Rejection
from selfheal.workflows.approval_desk import MAX_REFUSALS_PER_IDENTITY
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.keys import keypair, people_yaml
from tests.workflows.helpers import NotificationSink, alert, running_worker, settings_for, start_incident, wait_for, wait_status

ROOT = Path(__file__).resolve().parents[2]


def whitelist(unit: str, keys: dict[str, str]) -> str:
    def entry(entry_id: str, alertname: str, radius: str) -> str:
        return f"""
  - id: {entry_id}
    kind: systemd.restart
    target: {{unit: {unit}, host: localhost, scope: user}}
    blast_radius: {radius}
    approvers: {{people: [alice, bob, carol]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    match: ['alertname="{alertname}"']
    verify: {{timeout: 10s}}
"""

    return (f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
tiers:
  instance: {{approvals: 0}}
  service: {{approvals: 1}}                                  # verified channels only (the default)
  pair: {{approvals: 2, channels: [ssh, unverified]}}        # a typed name counts here
  careful: {{approvals: 1, confirm: true}}
{people_yaml(keys)}entries:""" + entry("restart-api-service", "ApiSlow", "service")
            + entry("restart-api-pair", "ApiPair", "pair") + entry("restart-api-careful", "ApiCareful", "careful"))


RULES = "signatures:\n" + "".join(f"""
  - id: {name}
    summary: the test alert
    match: ['alertname="{name}"']
    propose: {entry}
""" for name, entry in (("ApiSlow", "restart-api-service"), ("ApiPair", "restart-api-pair"), ("ApiCareful", "restart-api-careful")))


def cli(temporal_env, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run([sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def signed(record: AuditRecord, key: str, person: str = "alice", **changes) -> Approval:
    """An approval signed with ``key``, its statement built from the incident, then changed."""
    fields = dict(action="approve", subject=record.incident_id, entry=record.decision.entry_id,
                  target=record.request.target, decision=attest.decision_digest(record.decision),
                  person=person, channel="ssh")
    fields.update(changes)
    statement = attest.new_statement(**fields)
    return Approval(approver=person, channel="ssh", statement=statement.canonical().decode(),
                    signature=attest.sign_ssh(statement.canonical(), key))


@pytest.fixture
def keys(tmp_path):
    return {name: keypair(tmp_path, name) for name in ("alice", "bob", "carol", "mallory")}


def signed_settings(tmp_path, unit, task_queue: str, keys, notify_url: str | None = None):
    """The worker's settings: the test whitelist naming everyone's public key but mallory's."""
    public = {name: pair[1] for name, pair in keys.items() if name != "mallory"}
    return settings_for(tmp_path, unit.name, task_queue, notify_url, whitelist=whitelist(unit.name, public), rules=RULES)


async def waiting(client, task_queue: str, alertname: str):
    handle = await start_incident(client, task_queue, alert(alertname))
    await wait_status(handle, "awaiting_approval")
    return handle, await handle.query(IncidentWorkflow.audit)


async def refused(handle, approval: Approval) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(IncidentWorkflow.approve, approval)
    return str(failure.value.cause)


async def test_a_signed_cli_approval_counts_and_forged_expired_misdirected_or_replayed_ones_do_not(
        temporal_env, client, task_queue, tmp_path, unit, runner, keys):
    with NotificationSink() as sink:
        settings = signed_settings(tmp_path, unit, task_queue, keys, sink.url)
        async with running_worker(client, settings, runner):
            handle = await _signed_approval_story(temporal_env, client, task_queue, keys)
    # Unverified attempts show in the notifications too, not only in the audit.
    [outcome] = [n for n in sink.received if n["incident_id"] == handle.id and n["kind"] == "outcome"]
    assert "unverified by alice via unverified (not verified)" in outcome["details"]["approvals"]
    assert "approved by alice via ssh" in outcome["details"]["approvals"]


async def _signed_approval_story(temporal_env, client, task_queue, keys):
    """Forged, misdirected, stale, unverified, then a good signed approval; returns the incident."""
    handle, record = await waiting(client, task_queue, "ApiSlow")
    other, _ = await waiting(client, task_queue, "ApiSlow")
    alice = keys["alice"][0]
    reasons = [
        await refused(handle, signed(record, keys["mallory"][0])),               # a key not listed for alice
        await refused(handle, signed(record, alice, subject=other.id)),          # another incident
        await refused(handle, signed(record, alice, decision="0" * 32)),         # an earlier decision
        await refused(handle, signed(record, alice, expires=datetime.now(timezone.utc) - timedelta(seconds=1))),
        await refused(handle, signed(record, alice, target={**record.request.target, "host": "web-9"})),
    ]
    typed = await asyncio.to_thread(cli, temporal_env, "approve", handle.id, "--as", "alice", "--unsigned")
    await handle.signal(IncidentWorkflow.approve_signal, Approval(approver="alice"))
    assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"  # nothing above counted

    shown = await asyncio.to_thread(cli, temporal_env, "show", handle.id, "--as", "alice", "--key", alice)
    assert shown.returncode == 0 and f"recorded: alice read the evidence of {handle.id}" in shown.stderr
    good = await asyncio.to_thread(cli, temporal_env, "approve", handle.id, "--as", "alice", "--key", alice,
                                   "--comment", "read the journal: pool exhausted")
    assert good.returncode == 0 and "approved by alice (1 of 1)" in good.stdout, good.stderr
    final: AuditRecord = await handle.result()
    assert "not valid for a key listed for this person" in reasons[0]
    assert f"signed for subject '{other.id}'" in reasons[1]
    assert "signed for an earlier or other decision" in reasons[2]
    assert "expired at" in reasons[3]
    assert "signed for target" in reasons[4]
    assert typed.returncode == 1 and "unverified: a typed name proves nothing" in typed.stderr
    assert final.outcome == "remediated", final.outcome_detail
    events = [(e.kind, e.via, e.channel, e.verified) for e in final.approvals]
    assert events == [("refused", "update", "ssh", False)] * 5 + [
        ("unverified", "update", "unverified", False), ("unverified", "signal", "unverified", False),
        ("approved", "update", "ssh", True)]
    assert final.approvals[-1].note == "read the journal: pool exhausted"
    assert final.approvals[-1].evidence_viewed and [(v.person, v.channel, v.verified) for v in final.evidence_views] == [
        ("alice", "ssh", True)]
    assert final.approvals[-1].after_seconds is not None and final.approvals[-1].after_seconds >= 0
    return handle


async def test_a_replayed_statement_is_refused_and_one_person_counts_once_across_channels(
        temporal_env, client, task_queue, tmp_path, unit, runner, keys):
    settings = signed_settings(tmp_path, unit, task_queue, keys)
    async with running_worker(client, settings, runner):
        handle, record = await waiting(client, task_queue, "ApiPair")  # two approvers; typed names count here
        first = signed(record, keys["alice"][0])
        assert await handle.execute_update(IncidentWorkflow.approve, first) == "approved by alice (1 of 2)"
        replay = await refused(handle, first)
        again = await refused(handle, Approval(approver="alice"))  # the same person through another channel
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"
        assert await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob")) == "approved by bob (2 of 2)"
        final: AuditRecord = await handle.result()
    assert "replayed" in replay
    assert "'alice' already approved" in again
    assert final.outcome == "remediated"
    assert [(e.kind, e.approver, e.channel, e.verified) for e in final.approvals] == [
        ("approved", "alice", "ssh", True), ("refused", "alice", "ssh", False), ("refused", "alice", "unverified", False),
        ("approved", "bob", "unverified", False)]


async def test_a_tier_that_asks_for_confirmation_refuses_a_wrong_or_missing_target(
        temporal_env, client, task_queue, tmp_path, unit, runner, keys):
    settings = signed_settings(tmp_path, unit, task_queue, keys)
    async with running_worker(client, settings, runner):
        handle, record = await waiting(client, task_queue, "ApiCareful")
        key = keys["carol"][0]
        missing = await asyncio.to_thread(cli, temporal_env, "approve", handle.id, "--as", "carol", "--key", key)
        wrong = await asyncio.to_thread(cli, temporal_env, "approve", handle.id, "--as", "carol", "--key", key,
                                        "--confirm", "other.service@localhost")
        expected = attest.confirmation_text(record.request)
        right = await asyncio.to_thread(cli, temporal_env, "approve", handle.id, "--as", "carol", "--key", key,
                                        "--confirm", expected)
        final: AuditRecord = await handle.result()
    assert expected == f"{unit.name}@localhost"
    assert missing.returncode == 1 and "asks to confirm the target: no confirmation" in missing.stderr
    assert wrong.returncode == 1 and "'other.service@localhost' is not" in wrong.stderr
    assert right.returncode == 0, right.stderr
    assert final.outcome == "remediated"
    assert [e.kind for e in final.approvals] == ["refused", "refused", "approved"]


async def test_the_approve_line_a_notification_prints_runs_as_printed_and_the_person_types_the_target(
        temporal_env, client, task_queue, tmp_path, unit, runner, keys):
    with NotificationSink() as sink:
        settings = signed_settings(tmp_path, unit, task_queue, keys, sink.url)
        async with running_worker(client, settings, runner):
            handle, record = await waiting(client, task_queue, "ApiCareful")
            async def request():
                return next((n for n in sink.received if n["kind"] == "approval_requested"), None)

            asked = await wait_for(request)
            lines = asked["details"]["approve"].splitlines()
            # carol's own machine: her key where the CLI looks by default, no agent, selfheal on PATH
            home = tmp_path / "carol"
            (home / ".ssh").mkdir(parents=True)
            shutil.copy(keys["carol"][0], home / ".ssh" / "id_ed25519")
            env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                   "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host}
            expected = attest.confirmation_text(record.request)

            def run_line(typed: str) -> subprocess.CompletedProcess:
                return subprocess.run(["sh", "-c", lines[2]], cwd=tmp_path, env=env, input=typed, capture_output=True,
                                      text=True, timeout=60)

            nothing = await asyncio.to_thread(run_line, "")  # the input ends before a target: nothing is sent
            ran = await asyncio.to_thread(run_line, expected + "\n")
            final: AuditRecord = await handle.result()
    assert lines == [f"selfheal approve {shlex.quote(handle.id)} --as {who} --confirm -" for who in ("alice", "bob", "carol")]
    assert nothing.returncode == 1 and "no target was typed" in nothing.stderr, nothing.stdout + nothing.stderr
    assert ran.returncode == 0 and "approved by carol" in ran.stdout, ran.stdout + ran.stderr
    assert f"type the target to approve ({expected})" in ran.stderr
    assert final.outcome == "remediated"
    assert [(e.kind, e.approver, e.verified) for e in final.approvals] == [("approved", "carol", True)]


async def test_an_unmapped_slack_user_never_counts_even_where_typed_names_do_and_one_name_fills_only_its_share(
        temporal_env, client, task_queue, tmp_path, unit, runner, keys):
    settings = signed_settings(tmp_path, unit, task_queue, keys)
    async with running_worker(client, settings, runner):
        handle, _ = await waiting(client, task_queue, "ApiPair")  # a tier where typed names count
        flood = MAX_REFUSALS_PER_IDENTITY + 3
        for _ in range(flood):  # as an ingress reports a Slack user it maps to nobody: unsigned
            await handle.signal(IncidentWorkflow.approve_signal,
                                Approval(approver="slack:TEVIL1:UALICE", channel="slack", comment="alice"))
        await handle.signal(IncidentWorkflow.reject_signal, Rejection(approver="slack:T1:UBOB", channel="slack"))
        update = await refused(handle, Approval(approver="slack:T1:UBOB", comment="bob"))
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"  # no refusal approved or rejected
        assert await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice")) == "approved by alice (1 of 2)"
        assert await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob")) == "approved by bob (2 of 2)"
        final: AuditRecord = await handle.result()
    assert "unmapped Slack user T1:UBOB (display name 'bob')" in update and "never counts" in update
    assert final.outcome == "remediated"
    unmapped = [e for e in final.approvals if e.approver.startswith("slack:")]
    assert [(e.approver, e.kind, e.channel, e.verified) for e in unmapped] == (
        [("slack:TEVIL1:UALICE", "refused", "slack", False)] * MAX_REFUSALS_PER_IDENTITY
        + [("slack:T1:UBOB", "refused", "slack", False)] * 2)
    assert final.refusals_not_recorded == flood - MAX_REFUSALS_PER_IDENTITY
    assert all("unmapped Slack user" in e.note for e in unmapped)
    assert [e.approver for e in final.approvals if e.kind == "approved"] == ["alice", "bob"]
