"""The governor: autonomy bounded across incidents, on real Temporal and a real systemd.

Five "hosts" (web-1..web-5) are names the test's runner maps to the one systemd --user
manager of the harness: every restart is a real restart of the one unit, and a host the
incident names is checked against the entry's glob like any other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.worker import Worker

from selfheal import worker as worker_module
from selfheal.activities.diagnose import load_rules
from selfheal.activities.governor import announce_whitelist, read_brakes, read_status
from selfheal.activities.runner import LocalRunner
from selfheal.contract import Approval, AuditRecord
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.contract.governor import GovernorStatus, Pause, Resume, governor_id
from selfheal.workflows.governor import GovernorWorkflow
from selfheal.workflows.incident import IncidentWorkflow
from tests.support.keys import keypair, people_yaml
from tests.workflows.helpers import FAST, TYPED_NAMES_COUNT, alert, ended, start_incident, wait_for, wait_status

ROOT = Path(__file__).resolve().parents[2]
HOSTS = [f"web-{i}" for i in range(1, 6)]


def whitelist(unit: str, verify: str = "10s", people: str = "") -> str:
    return f"""version: 1
metadata: {{reviewed_by: [alice], reviewed_at: 2026-11-26}}
groups: {{sre: [carol]}}
{people}{TYPED_NAMES_COUNT}entries:
  - id: restart-web
    kind: systemd.restart
    target: {{unit: {unit}, host: "web-*", scope: user}}
    blast_radius: instance
    approvers: {{people: [alice, bob], groups: [sre]}}
    rate_limit: {{max_executions: 100, window: 1h}}
    cooldown: 5m
    match: ['alertname="WebDown"']
    verify: {{timeout: {verify}}}
    breaker: {{failures: 2, window: 1h}}
  - id: rollback-checkout
    kind: ecs.rollback
    target: {{cluster: demo, service: checkout, task_definition: "checkout:41", region: eu-west-1, account: "123456789012"}}
    blast_radius: service
    approvers: {{people: [alice, bob]}}
    rate_limit: {{max_executions: 1, window: 1h}}
    cooldown: 0s
    match: ['alertname="CheckoutErrorRate"']
    verify: {{timeout: 1m}}
"""


RULES = """
signatures:
  - id: web-down
    summary: a web host stopped answering; a restart brings it back
    match: ['alertname="WebDown"']
    propose: restart-web
"""


def settings(tmp: Path, task_queue: str, unit: str, verify: str = "10s") -> WorkerSettings:
    # alice and carol sign with their SSH keys: giving autonomy back needs proof.
    keys = {name: keypair(tmp, name)[1] for name in ("alice", "carol")}
    (tmp / "wl.yaml").write_text(whitelist(unit, verify, people_yaml(keys)))
    (tmp / "rules.yaml").write_text(RULES)
    return WorkerSettings(task_queue=task_queue, whitelist=str(tmp / "wl.yaml"), diagnosis=str(tmp / "rules.yaml"), incident=FAST)


def worker(client, s: WorkerSettings, prefix: list[str], without: tuple[str, ...] = (), hosts: list[str] = HOSTS):
    """A worker whose runner reaches the web hosts (all the harness's manager)."""
    import httpx

    class Running:
        async def __aenter__(self):
            self.http = httpx.AsyncClient()
            loaded = load_whitelist(s.whitelist)
            runner = LocalRunner(prefix, local_hosts=hosts)
            activities = [a for a in worker_module.build_activities(s, loaded, load_rules(s.diagnosis), client, runner,
                                                                     self.http, True)
                          if getattr(a, "__temporal_activity_definition").name not in without]
            self.worker = Worker(client, task_queue=s.task_queue, workflows=worker_module.WORKFLOWS,
                                 activities=activities, workflow_runner=worker_module.WORKFLOW_RUNNER)
            self.governors = worker_module.governor_worker(client, s.task_queue)
            await self.worker.__aenter__()
            await self.governors.__aenter__()
            await announce_whitelist(client, s.task_queue, loaded)
            return self

        async def __aexit__(self, *exc):
            await self.governors.__aexit__(*exc)
            await self.worker.__aexit__(*exc)
            await self.http.aclose()

    return Running()


async def governor_status(client, task_queue: str) -> GovernorStatus:
    return await read_status(client, task_queue)


async def settled(handle) -> str:
    """Wait until the incident either ended or waits for people; return which."""
    async def probe():
        status = await handle.query(IncidentWorkflow.status)
        return status if status in ("done", "awaiting_approval") else None

    return await wait_for(probe, timeout=60)


async def test_five_hosts_at_once_one_acts_alone_the_rest_wait_for_the_fleet_tier(client, task_queue, tmp_path, unit, systemd_user):
    async with worker(client, settings(tmp_path, task_queue, unit.name), systemd_user.ns_command_prefix):
        handles = await asyncio.gather(*(start_incident(client, task_queue, alert("WebDown", host=h)) for h in HOSTS))
        await asyncio.gather(*(settled(h) for h in handles))
        records = [await h.query(IncidentWorkflow.audit) for h in handles]
        alone = [r for r in records if r.decision.kind == "auto"]
        waiting = [r for r in records if r.status == "awaiting_approval"]
        assert len(alone) == 1 and len(waiting) == 4, [str(r.decision) for r in records]
        assert not [r for r in records if r.decision.kind == "deny"]  # asked, never simply refused
        for r in waiting:
            assert (r.decision.declared_tier, r.decision.tier, r.decision.approvals) == ("instance", "fleet", 2)
            [why] = r.decision.raised_by
            assert "distinct targets" in why and r.decision.targets[0] in why and alone[0].decision.targets[0] in why
        first = await client.get_workflow_handle(alone[0].incident_id, result_type=AuditRecord).result()
        status = await governor_status(client, task_queue)
        web = next(e for e in status.entries if e.entry_id == "restart-web")
        assert web.autonomous_targets == alone[0].decision.targets

        # People can still let one of the others act: the fleet tier's two approvers.
        second = client.get_workflow_handle(waiting[0].incident_id, result_type=AuditRecord)
        await second.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        await second.execute_update(IncidentWorkflow.approve, Approval(approver="carol"))
        record = await second.result()
    assert first.outcome == "remediated", first.outcome_detail
    assert record.outcome == "remediated", record.outcome_detail
    assert [e.approver for e in record.approvals if e.kind == "approved"] == ["alice", "carol"]
    assert unit.start_count() == 3  # the install, the one that acted alone, the one people approved


async def test_a_pause_between_decision_and_executor_sends_the_incident_back_to_people(temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    s = settings(tmp_path, task_queue, unit.name)
    prefix = systemd_user.ns_command_prefix
    # A worker without the executor holds the incident after its automatic decision (and
    # the reservation that came with it), right before the act.
    async with worker(client, s, prefix, without=("restart_unit",)):
        handle = await start_incident(client, task_queue, alert("WebDown", host="web-1"))

        async def executor_pending():
            description = await handle.describe()
            return any(a.activity_type.name == "restart_unit" and a.attempt >= 2
                       for a in description.raw_description.pending_activities)

        await wait_for(executor_pending, timeout=60)
        assert (await handle.query(IncidentWorkflow.audit)).decision.kind == "auto"
        await client.get_workflow_handle(governor_id(task_queue)).execute_update(
            GovernorWorkflow.pause, Pause(by="bob", reason="bad config push under way"))
    async with worker(client, s, prefix):
        await wait_status(handle, "awaiting_approval", timeout=60)
        record = await handle.query(IncidentWorkflow.audit)
        assert [d.kind for d in record.earlier_decisions] == ["auto"]
        assert (record.decision.tier, record.decision.approvals) == ("service", 1)
        assert any("paused by bob" in why and "bad config push" in why for why in record.decision.raised_by)
        assert unit.start_count() == 1  # nothing acted while paused
        await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
        record = await handle.result()
        resumed = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--as", "alice",
                                          "--key", keypair(tmp_path, "alice")[0])
        assert resumed.returncode == 0, resumed.stderr
    assert record.outcome == "remediated", record.outcome_detail
    assert unit.start_count() == 2


def cli(temporal_env, task_queue: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
           "SELFHEAL_TASK_QUEUE": task_queue}
    return subprocess.run([sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_breaker_opens_after_its_threshold_and_only_an_allowed_person_closes_it(temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    unit.fail_flag.touch()  # every restart fails: every verification fails
    async with worker(client, settings(tmp_path, task_queue, unit.name, verify="2s"), systemd_user.ns_command_prefix):
        first = await ended(await start_incident(client, task_queue, alert("WebDown", host="web-1")))
        assert first.outcome == "verification_failed" and first.decision.kind == "auto"
        second = await start_incident(client, task_queue, alert("WebDown", host="web-2"))
        await wait_status(second, "awaiting_approval")  # web-1 already acted alone: the fleet tier
        for person in ("alice", "bob"):
            await second.execute_update(IncidentWorkflow.approve, Approval(approver=person))
        assert (await ended(second)).outcome == "verification_failed"

        status = await governor_status(client, task_queue)
        breaker = next(e for e in status.entries if e.entry_id == "restart-web").breaker
        assert breaker is not None and "2 verification failures" in breaker.reason
        third = await start_incident(client, task_queue, alert("WebDown", host="web-3"))  # web-1, web-2 cool down
        await wait_status(third, "awaiting_approval")
        reasons = (await third.query(IncidentWorkflow.audit)).decision.raised_by
        assert any(why.startswith("breaker open") for why in reasons), reasons

        assert "2 verification failures" in (await read_brakes(client, task_queue)).breakers["restart-web"].reason

        carol_key = keypair(tmp_path, "carol")[0]
        refused = await asyncio.to_thread(cli, temporal_env, task_queue, "breaker", "close", "restart-web",
                                          "--as", "mallory", "--reason", "fixed", "--key", carol_key)
        assert refused.returncode == 1 and "'mallory' may not approve restart-web" in refused.stderr
        forged = await asyncio.to_thread(cli, temporal_env, task_queue, "breaker", "close", "restart-web",
                                         "--as", "alice", "--reason", "fixed", "--key", carol_key)
        assert forged.returncode == 1 and "not valid for a key listed for this person" in forged.stderr
        closed = await asyncio.to_thread(cli, temporal_env, task_queue, "breaker", "close", "restart-web",
                                         "--as", "carol", "--reason", "config rolled back", "--key", carol_key)
        assert closed.returncode == 0, closed.stderr
        status = await governor_status(client, task_queue)
        assert (await read_brakes(client, task_queue)).breakers == {}  # the executors' view: closed as well
    assert next(e for e in status.entries if e.entry_id == "restart-web").breaker is None
    assert [(e.by, e.action, e.verified) for e in status.log if e.action != "paused"][-4:] == [
        ("selfheal", "breaker_opened", False), ("mallory", "refused", False), ("alice", "refused", False),
        ("carol", "breaker_closed", True)]


async def test_pause_and_resume_through_the_cli_for_everything_and_for_one_entry(temporal_env, client, task_queue, tmp_path, unit, systemd_user):
    async with worker(client, settings(tmp_path, task_queue, unit.name), systemd_user.ns_command_prefix):
        paused = await asyncio.to_thread(cli, temporal_env, task_queue, "pause", "--as", "bob", "--reason", "maintenance",
                                         "--for", "2h")
        assert paused.returncode == 0 and "autonomy paused for every entry by bob" in paused.stdout, paused.stderr
        shown = await asyncio.to_thread(cli, temporal_env, task_queue, "status")
        assert "PAUSED for every entry by bob: maintenance" in shown.stdout, shown.stdout + shown.stderr

        handle = await start_incident(client, task_queue, alert("WebDown", host="web-1"))
        await wait_status(handle, "awaiting_approval")
        decision = (await handle.query(IncidentWorkflow.audit)).decision
        assert decision.declared_tier == "instance" and decision.approvals == 1
        assert any("paused by bob" in why and "maintenance" in why for why in decision.raised_by)

        stranger = await asyncio.to_thread(cli, temporal_env, task_queue, "pause", "--as", "mallory", "--reason", "x")
        assert stranger.returncode == 1 and "'mallory' is not named in the whitelist" in stranger.stderr
        alice_key, carol_key = keypair(tmp_path, "alice")[0], keypair(tmp_path, "carol")[0]
        narrow = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--as", "carol", "--key", carol_key)
        assert narrow.returncode == 1 and "'carol' may not approve rollback-checkout" in narrow.stderr
        with pytest.raises(WorkflowUpdateFailedError) as typed:  # giving autonomy back needs proof
            await client.get_workflow_handle(governor_id(task_queue)).execute_update(GovernorWorkflow.resume, Resume(by="alice"))
        assert "unverified" in str(typed.value.cause)
        resumed = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--as", "alice", "--key", alice_key)
        assert resumed.returncode == 0, resumed.stderr
        assert await handle.query(IncidentWorkflow.status) == "awaiting_approval"  # keeps waiting for people

        one = await asyncio.to_thread(cli, temporal_env, task_queue, "pause", "--entry", "restart-web", "--as", "carol",
                                      "--reason", "flapping", "--sign", "--key", carol_key)  # signed: recorded as verified
        assert one.returncode == 0, one.stderr
        log = (await client.get_workflow_handle(governor_id(task_queue)).query(GovernorWorkflow.status)).log
        assert [(e.action, e.by, e.verified) for e in log if e.action == "paused"] == [
            ("paused", "bob", False), ("paused", "carol", True)]
        listed = await asyncio.to_thread(cli, temporal_env, task_queue, "incidents")
        assert "restart-web paused" in listed.stdout, listed.stdout + listed.stderr
        other = await start_incident(client, task_queue, alert("WebDown", host="web-2"))
        await wait_status(other, "awaiting_approval")
        reasons = (await other.query(IncidentWorkflow.audit)).decision.raised_by
        assert any("paused by carol" in why for why in reasons), reasons
        entry_resume = await asyncio.to_thread(cli, temporal_env, task_queue, "resume", "--entry", "restart-web",
                                               "--as", "carol", "--key", carol_key)
        assert entry_resume.returncode == 0, entry_resume.stderr
        status = await governor_status(client, task_queue)
        brakes = await read_brakes(client, task_queue)  # the executors' view: released as well
        assert (brakes.pause_all, brakes.pauses) == (None, {})
    assert status.pause_all is None and all(not e.paused for e in status.entries)
    assert [(e.by, e.action, e.verified) for e in status.log] == [
        ("selfheal", "announced", False), ("bob", "paused", False), ("mallory", "refused", False), ("carol", "refused", False), ("alice", "refused", False),
        ("alice", "resumed", True), ("carol", "paused", True), ("carol", "resumed", True)]
    assert unit.start_count() == 1  # nothing acted alone while paused


async def test_governors_decide_on_a_queue_of_their_own_without_an_incident_worker(client, task_queue, tmp_path):
    """A decision is a governor's workflow task on ``<queue>-governors``: answered with no
    worker on the incidents' queue at all, so it never waits behind incidents' own tasks.
    The reservation the governor said once comes back whole."""
    from temporalio.testing import ActivityEnvironment

    from selfheal.activities.governor import GovernorActivities
    from selfheal.contract.governor import AssessInput, entry_governor_id, governor_queue, reservation_key
    from selfheal.whitelist import ActionRequest

    (tmp_path / "wl.yaml").write_text(whitelist("web.service"))
    loaded = load_whitelist(tmp_path / "wl.yaml")
    request = ActionRequest(entry_id="restart-web", target={"unit": "web.service", "host": "web-1", "scope": "user"})
    inp = AssessInput(whitelist_sha256=loaded.sha256, policy=loaded.whitelist.for_entry("restart-web"), request=request,
                      incident_id="i-1", idempotency_key=reservation_key("i-1", "restart-web"))
    async with worker_module.governor_worker(client, task_queue):
        await announce_whitelist(client, task_queue, loaded)
        assessed = await ActivityEnvironment().run(GovernorActivities(loaded, client, task_queue).assess_action, inp)
    assert assessed.decision.kind == "auto" and assessed.reserved.granted
    execution = assessed.reserved.execution
    assert (execution.incident_id, execution.entry_id, execution.targets, execution.autonomous) == (
        "i-1", "restart-web", ["web-1"], True)
    assert assessed.reserved.decision == assessed.decision and assessed.reserved.whitelist_sha256 == loaded.sha256
    for wid in (governor_id(task_queue), entry_governor_id(task_queue, "restart-web")):
        assert (await client.get_workflow_handle(wid).describe()).task_queue == governor_queue(task_queue)
