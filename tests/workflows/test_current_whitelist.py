"""The current whitelist has one owner, and a pause holds at once.

- An incident decides under its own snapshot, and never changes what the deployment
  governor holds: after a reload that removes a person, an incident of the old file
  deciding and reserving does not give that person back their authority.
- A worker restarted with an older file (a lower ``metadata.revision``) is refused.
- Two workers with different whitelists on one task queue: every reservation is decided
  under the newest revision announced.
- ``selfheal pause`` racing a burst of automatic incidents: no executor starts after the
  pause returned.

The hosts web-1..web-8 are names the runner maps to the one systemd --user manager of the
harness (as in test_governor.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from selfheal.activities.governor import announce_whitelist, read_status
from selfheal.contract import Approval, AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.contract.governor import Pause, governor_id
from selfheal.workflows.governor import GovernorWorkflow
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.keys import keypair, people_yaml
from tests.workflows.helpers import FAST, TYPED_NAMES_COUNT, alert, start_incident, wait_for, wait_status
from tests.workflows.test_governor import RULES, cli, settled, worker

HOSTS = [f"web-{i}" for i in range(1, 9)]


def whitelist(unit: str, revision: int, sre: str, people: str, radius: str = "instance", max_targets: int = 1) -> str:
    return f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-12-06, revision: {revision}}}
groups: {{sre: [{sre}]}}
{people}{TYPED_NAMES_COUNT}entries:
  - id: restart-web
    kind: systemd.restart
    target: {{unit: {unit}, host: "web-*", scope: user}}
    blast_radius: {radius}
    approvers: {{people: [alice, bob], groups: [sre]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 0s
    autonomy: {{max_targets: {max_targets}, window: 1h}}
    match: ['alertname="WebDown"']
    verify: {{timeout: 10s}}
"""


def files(tmp: Path, unit: str, **changes) -> tuple[WorkerSettings, Path, Path]:
    """Worker settings on v1 (mallory in sre), and v2 (revision 2, mallory removed)."""
    keys = {name: keypair(tmp, name)[1] for name in ("alice", "carol", "mallory")}
    v1, v2 = tmp / "v1.yaml", tmp / "v2.yaml"
    v1.write_text(whitelist(unit, 1, "carol, mallory", people_yaml(keys)))
    v2.write_text(whitelist(unit, 2, "carol", people_yaml(keys), **changes))
    (tmp / "rules.yaml").write_text(RULES)
    return WorkerSettings(task_queue="", whitelist=str(v1), diagnosis=str(tmp / "rules.yaml"), incident=FAST), v1, v2


async def test_an_old_incident_deciding_after_a_reload_gives_a_removed_person_nothing_back(
        temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    s, v1, v2 = files(tmp_path, unit.name)
    s = s.model_copy(update={"task_queue": task_queue})
    mallory = keypair(tmp_path, "mallory")[0]
    async with worker(client, s, systemd_user.ns_command_prefix):  # announces v1, keeps deciding under it
        pause = ("pause", "--entry", "restart-web", "--as", "bob", "--reason", "upgrade")
        assert (await asyncio.to_thread(cli, temporal_env, task_queue, *pause)).returncode == 0
        # Under v1 mallory may give restart-web its autonomy back (she is in sre) ...
        under_v1 = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--entry", "restart-web",
                                           "--as", "mallory", "--key", mallory)
        assert under_v1.returncode == 0, under_v1.stderr
        assert (await asyncio.to_thread(cli, temporal_env, task_queue, *pause)).returncode == 0

        # ... then worker B of a rolling upgrade announces v2, which removes her.
        new = load_whitelist(v2)
        assert "is current" in await announce_whitelist(client, task_queue, new)
        # An incident handled by worker A decides under v1 (its snapshot) and reserves under v2.
        handle = await start_incident(client, task_queue, alert("WebDown", host="web-1"))
        await wait_status(handle, "awaiting_approval")  # paused: people decide
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record: AuditRecord = await handle.result()
        refused = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--entry", "restart-web",
                                          "--as", "mallory", "--key", mallory)
        closing = await asyncio.to_thread(cli, temporal_env, task_queue, "breaker", "close", "restart-web",
                                          "--as", "mallory", "--key", mallory, "--reason", "mine")
        # Worker A restarting with its old file cannot take the deployment back to v1.
        old = load_whitelist(v1)
        kept = await announce_whitelist(client, task_queue, old)
        status = await read_status(client, task_queue)
        shown = await asyncio.to_thread(cli, temporal_env, task_queue, "status")
    assert record.outcome == "remediated", record.outcome_detail
    assert record.whitelist_sha256 == old.sha256 and record.reserved_under_sha256 == new.sha256
    assert refused.returncode == 1 and "'mallory' may not approve restart-web" in refused.stderr, refused.stderr
    assert closing.returncode == 1 and "'mallory' may not approve restart-web" in closing.stderr, closing.stderr
    assert "older than the current" in kept and "revision 1" in kept
    assert status.whitelist_sha256 == new.sha256 and status.revision == 2
    assert new.sha256[:12] in shown.stdout and "revision 2" in shown.stdout
    assert [e.entry_id for e in status.entries if e.paused] == ["restart-web"]  # her resume did not count
    refusals = [e.reason for e in status.log if e.action == "refused"]
    assert any("mallory" in r for r in refusals) and any("older than" in r for r in refusals)


async def test_two_workers_with_different_whitelists_act_only_as_the_newest_allows(
        temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    # v2 (revision 2) raises restart-web to the service tier: nothing of it may act alone.
    s, v1, v2 = files(tmp_path, unit.name, radius="service")
    a = s.model_copy(update={"task_queue": task_queue})
    b = a.model_copy(update={"whitelist": str(v2)})
    old, new = load_whitelist(v1), load_whitelist(v2)
    # Another process, as far as Temporal can tell: the SDK allows one worker per client and queue.
    other = await Client.connect(client.service_client.config.target_host, data_converter=pydantic_data_converter)
    async with worker(client, b, systemd_user.ns_command_prefix):
        async with worker(other, a, systemd_user.ns_command_prefix):  # announced after B: refused, B's stays
            handles = await asyncio.gather(*(start_incident(client, task_queue, alert("WebDown", host=h))
                                             for h in HOSTS[:4]))
            assert set(await asyncio.gather(*(settled(h) for h in handles))) == {"awaiting_approval"}
            records = [await h.query(IncidentWorkflow.audit) for h in handles]
            status = await read_status(client, task_queue)
    assert status.whitelist_sha256 == new.sha256
    for r in records:
        assert r.whitelist_sha256 in (old.sha256, new.sha256)
        assert r.remediation is None and r.decision.tier in ("service", "fleet"), str(r.decision)
        if r.earlier_decisions:
            # Decided alone under worker A's v1, then decided again under v2 at the reservation.
            assert r.whitelist_sha256 == old.sha256 and r.earlier_decisions[0].kind == "auto"
            assert r.reserved_under_sha256 == new.sha256
    assert unit.start_count() == 1  # its own start: nothing acted alone


async def test_no_automatic_action_starts_after_pause_returns(temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    s, v1, _ = files(tmp_path, unit.name)
    v1.write_text(whitelist(unit.name, 1, "carol", "", max_targets=len(HOSTS)))
    s = s.model_copy(update={"task_queue": task_queue})
    governor = client.get_workflow_handle(governor_id(task_queue))
    async with worker(client, s, systemd_user.ns_command_prefix, hosts=HOSTS):
        handles = await asyncio.gather(*(start_incident(client, task_queue, alert("WebDown", host=h)) for h in HOSTS))

        async def one_acting():
            statuses = await asyncio.gather(*(h.query(IncidentWorkflow.status) for h in handles))
            return any(st in ("verifying", "done") for st in statuses)  # one executed: the rest race the pause
        await wait_for(one_acting, timeout=60, interval=0.02)
        await governor.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason="stop the burst"))
        returned = datetime.now(timezone.utc)
        states = await asyncio.gather(*(settled(h) for h in handles))
        records = [await h.query(IncidentWorkflow.audit) for h in handles]
        started = [await executor_started(h) for h in handles]
    # "already_done": the one unit behind every host restarted since this incident read it; nothing ran.
    acted = [(r, t) for r, t in zip(records, started) if r.remediation is not None and r.remediation.action == "executed"]
    assert acted, "the pause came before any incident acted: the race was not run"
    for record, at in acted:
        assert at is not None and at < returned, f"{record.incident_id} started its executor at {at}, after {returned}"
    for record, state in zip(records, states):
        if record.remediation is None:
            assert state == "awaiting_approval" and any("paused by bob" in why for why in record.decision.raised_by)
    # Restarts issued at once may merge into one systemd job: no more starts than executions.
    assert 1 < unit.start_count() <= 1 + len(acted)


async def executor_started(handle) -> datetime | None:
    """When the incident's executor activity started (its last attempt), from history."""
    scheduled = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == "restart_unit":
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            if event.activity_task_started_event_attributes.scheduled_event_id in scheduled:
                return event.event_time.ToDatetime(tzinfo=timezone.utc)
    return None
