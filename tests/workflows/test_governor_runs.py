"""The governors never end: they continue as new, carrying what decisions need, and the
runs that did so are recorded for the replay test (``--record-histories``).

Driven through their updates directly (the activities' part is covered by every incident
test), on the real dev server, with a small ``updates_per_run`` so a run turns over in a
handful of updates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from selfheal import worker as worker_module
from selfheal.contract import ActionRequest, Execution
from selfheal.whitelist import load_whitelist_bytes
from selfheal.contract.governor import Assess, EntryState, Learn, Outcome, Reserve, entry_governor_id
from selfheal.workflows.entry_governor import EntryGovernorWorkflow
from selfheal.activities.governor import BrakeReader, read_brakes
from selfheal.contract import RemediationInput
from selfheal.contract.governor import BRAKED, Announce, Brake, Governor, GovernorState, Pause, governor_id
from selfheal.whitelist.vocabulary import Hold
from selfheal.workflows.governor import GovernorWorkflow
from tests.workflows.helpers import TYPED_NAMES_COUNT, wait_for

HISTORIES = Path(__file__).parent / "histories"

WHITELIST = """version: 1
metadata: {reviewed_by: [alice], reviewed_at: 2026-12-06, revision: REVISION}
groups: {sre: [carol]}
""" + TYPED_NAMES_COUNT + """entries:
  - id: restart-web
    kind: systemd.restart
    target: {unit: web.service, host: "web-*", scope: user}
    blast_radius: instance
    approvers: {people: [alice, bob], groups: [sre]}
    rate_limit: {max_executions: 100, window: 1h}
    cooldown: 0s
    autonomy: {max_targets: 1, window: 1h}
    match: ['alertname="WebDown"']
    verify: {timeout: 10s}
  - id: restart-db
    kind: systemd.restart
    target: {unit: db.service, host: "db-*", scope: user}
    blast_radius: service
    approvers: {people: [alice, bob]}
    rate_limit: {max_executions: 1, window: 1h}
    cooldown: 0s
    match: ['alertname="DbDown"']
    verify: {timeout: 10s}
"""


def loaded(revision: int):
    return load_whitelist_bytes(WHITELIST.replace("REVISION", str(revision)).encode(), f"wl-{revision}.yaml")


async def announced_governor(client, task_queue: str):
    """The deployment governor, started afresh and told revision 1 of ``WHITELIST``."""
    v1 = loaded(1)
    handle = await client.start_workflow(GovernorWorkflow.run, GovernorState(), id=governor_id(task_queue),
                                         task_queue=task_queue)
    await handle.execute_update(GovernorWorkflow.announce, Announce(
        whitelist=v1.whitelist, whitelist_sha256=v1.sha256, source=v1.path))
    return handle


def web(host: str) -> ActionRequest:
    return ActionRequest(entry_id="restart-web", target={"unit": "web.service", "host": host, "scope": "user"})


async def test_an_entry_governor_continues_as_new_with_its_claims_failures_and_whitelists(client, task_queue, request):
    v1 = loaded(1)
    wid = entry_governor_id(task_queue, "restart-web")
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await client.start_workflow(
            EntryGovernorWorkflow.run,
            EntryState(entry_id="restart-web", updates_per_run=4,
                       policies={v1.sha256: v1.whitelist.for_entry("restart-web")}),
            id=wid, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        first_run = handle.result_run_id
        alone = await handle.execute_update(EntryGovernorWorkflow.assess, Assess(
            whitelist_sha256=v1.sha256, request=web("web-1"), incident_id="i-1"))
        granted = await handle.execute_update(EntryGovernorWorkflow.reserve, Reserve(
            whitelist_sha256=v1.sha256, request=web("web-1"), incident_id="i-1", idempotency_key="i-1/act"))
        # An automatic decision that names the current whitelist is reserved in the same update.
        at_once = await handle.execute_update(EntryGovernorWorkflow.assess, Assess(
            whitelist_sha256=v1.sha256, request=web("web-1"), incident_id="i-4", reserve=True))  # the key derived
        remembered = await handle.execute_update(EntryGovernorWorkflow.record_outcome, Outcome(
            entry_id="restart-web", targets=["web-1"], incident_id="i-1", outcome="verification_failed",
            whitelist_sha256=v1.sha256))
        with pytest.raises(WorkflowUpdateFailedError) as unknown:  # a hash it does not hold: taught first
            await handle.execute_update(EntryGovernorWorkflow.assess, Assess(
                whitelist_sha256="0" * 64, request=web("web-2"), incident_id="i-2"))

        async def turned_over():
            return (await client.get_workflow_handle(wid).describe()).run_id != first_run
        await wait_for(turned_over)
        later = client.get_workflow_handle(wid)
        await later.execute_update(EntryGovernorWorkflow.learn, Learn(whitelist_sha256="0" * 64, policy=None))
        gone = await later.execute_update(EntryGovernorWorkflow.assess, Assess(
            whitelist_sha256="0" * 64, request=web("web-2"), incident_id="i-2"))
        fleet = await later.execute_update(EntryGovernorWorkflow.assess, Assess(
            whitelist_sha256=v1.sha256, request=web("web-1"), incident_id="i-3"))
        ledger = await later.query(EntryGovernorWorkflow.ledger)
        history = await client.get_workflow_handle(wid, run_id=first_run).fetch_history()
    assert alone.decision.kind == "auto" and alone.reserved is None  # no reserve: reserved apart
    # Said once: the asker knows the incident, the entry and the targets (the activity puts them back).
    assert granted.granted and granted.execution is None and granted.alone and granted.started_at
    assert at_once.decision.kind == "auto" and at_once.reserved.granted and at_once.reserved.alone
    assert at_once.reserved.in_full("i-4", "restart-web", at_once.decision, v1.sha256).execution.targets == ["web-1"]
    assert remembered == "remembered"
    assert unknown.value.cause.type == "UnknownWhitelist"
    assert gone.decision.kind == "deny" and gone.decision.rule == "unknown_entry"
    # The claim on web-1 and its failure crossed into the new run.
    assert fleet.decision.kind == "needs_approval" and any("failed" in why for why in fleet.decision.raised_by), fleet
    assert ledger.autonomous_targets == ["web-1"] and ledger.executions_in_rate_window == 2
    assert [f.incident_id for f in ledger.recent_failures] == ["i-1"]
    record(request, "governor-entry-continued-as-new", wid, history)


async def test_a_reload_that_shortens_a_window_does_not_let_a_new_run_forget_what_the_older_window_counts(
        client, task_queue):
    """A new run keeps what the longest window of every whitelist it knows still counts: an
    incident deciding under the file before a reload that shortened the rate window still
    sees the execution that file's window holds, and one under the reload does not."""
    def once_in(revision: int, window: str):
        text = WHITELIST.replace("REVISION", str(revision)).replace(
            "rate_limit: {max_executions: 100, window: 1h}", f"rate_limit: {{max_executions: 1, window: {window}}}")
        return load_whitelist_bytes(text.encode(), f"wl-{revision}.yaml")

    long_window, short_window = once_in(1, "1h"), once_in(2, "10m")
    wid = entry_governor_id(task_queue, "restart-web")
    half_an_hour_ago = datetime.now(timezone.utc) - timedelta(minutes=30)
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await client.start_workflow(
            EntryGovernorWorkflow.run,
            EntryState(entry_id="restart-web", updates_per_run=2,
                       policies={wl.sha256: wl.whitelist.for_entry("restart-web") for wl in (long_window, short_window)},
                       executions=[Execution(entry_id="restart-web", started_at=half_an_hour_ago, incident_id="i-0",
                                             targets=["web-1"])]),
            id=wid, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        first_run = handle.result_run_id
        for wl in (long_window, short_window):  # two updates: the run turns over
            await handle.execute_update(EntryGovernorWorkflow.learn, Learn(
                whitelist_sha256=wl.sha256, policy=wl.whitelist.for_entry("restart-web")))

        async def turned_over():
            return (await client.get_workflow_handle(wid).describe()).run_id != first_run
        await wait_for(turned_over)
        later = client.get_workflow_handle(wid)
        under = {name: await later.execute_update(EntryGovernorWorkflow.assess, Assess(
            whitelist_sha256=wl.sha256, request=web("web-1"), incident_id=f"i-{name}"))
            for name, wl in (("before", long_window), ("after", short_window))}
    assert under["before"].decision.kind == "deny" and under["before"].decision.rule == "rate_limit", under["before"]
    assert under["after"].decision.kind != "deny", under["after"]  # 30 minutes ago is outside its 10 minutes


async def test_the_deployment_governor_continues_as_new_with_its_whitelist_and_pauses(client, task_queue, request):
    v1, v2 = loaded(1), loaded(2)
    wid = governor_id(task_queue)
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await client.start_workflow(GovernorWorkflow.run, GovernorState(updates_per_run=4), id=wid,
                                             task_queue=task_queue)
        first_run = handle.result_run_id
        answers = [await handle.execute_update(GovernorWorkflow.announce, Announce(
            whitelist=wl.whitelist, whitelist_sha256=wl.sha256, source=wl.path)) for wl in (v2, v1)]
        until = datetime.now(timezone.utc) + timedelta(hours=2)
        await handle.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason="maintenance", until=until))
        await handle.execute_update(GovernorWorkflow.pause, Pause(by="carol", reason="flapping", entry_id="restart-db"))

        async def turned_over():
            return (await client.get_workflow_handle(wid).describe()).run_id != first_run
        await wait_for(turned_over)
        later = client.get_workflow_handle(wid)
        status = await later.query(GovernorWorkflow.status)
        brake = await later.query(GovernorWorkflow.brake, "restart-db")
        brakes = await read_brakes(client, task_queue)  # the new run's memo, as the activities read it
        history = await client.get_workflow_handle(wid, run_id=first_run).fetch_history()
    assert "is current" in answers[0] and "older than" in answers[1]
    assert (brakes.whitelist_sha256, brakes.revision) == (v2.sha256, 2)
    assert brakes.brake("restart-db") == Brake(paused=[status.pause_all, brake.paused[1]])
    assert brakes.brake("restart-web").paused == [status.pause_all]
    assert status.whitelist_sha256 == v2.sha256 and status.revision == 2
    assert status.pause_all.by == "bob" and [h.by for h in brake.paused] == ["bob", "carol"]
    assert [e.action for e in status.log] == ["announced", "refused", "paused", "paused"]
    record(request, "governor-continued-as-new", wid, history)


def record(request, name: str, workflow_id: str, history) -> None:
    if not request.config.getoption("--record-histories"):
        return
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    ids_file = HISTORIES / "workflow_ids.json"
    ids = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    ids[name] = workflow_id
    ids_file.write_text(json.dumps(dict(sorted(ids.items())), indent=1) + "\n")


async def test_the_memo_shows_a_pause_as_soon_as_pause_returns(client, task_queue):
    """The executors' last look at the brake reads the memo (a describe), not a query: it
    must never lag the update. Each pause here changes the hold; the very next describe,
    with no wait, shows it (the memo is written in the workflow task that answers)."""
    wid = governor_id(task_queue)
    v1 = loaded(1)
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await client.start_workflow(GovernorWorkflow.run, GovernorState(), id=wid, task_queue=task_queue)
        fresh = await read_brakes(client, task_queue)  # None before its first task: callers then ask with a query
        assert fresh is None or (fresh.whitelist_sha256, fresh.pause_all, fresh.pauses) == ("", None, {})
        await handle.execute_update(GovernorWorkflow.announce, Announce(
            whitelist=v1.whitelist, whitelist_sha256=v1.sha256, source=v1.path))
        assert (await read_brakes(client, task_queue)).whitelist_sha256 == v1.sha256
        seen = []
        for i in range(20):
            entry = "restart-db" if i % 2 else None
            await handle.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason=f"round {i}", entry_id=entry))
            brake = (await read_brakes(client, task_queue)).brake("restart-db")
            seen.append(sorted(h.reason for h in brake.paused))
        history = await handle.fetch_history()
    # Each pause wrote its own key (every entry's, or restart-db's), not every hold there is.
    written = [sorted(e.workflow_properties_modified_event_attributes.upserted_memo.fields)
               for e in history.events if e.HasField("workflow_properties_modified_event_attributes")]
    assert written[-20:] == [["paused:restart-db"] if i % 2 else ["brakes"] for i in range(20)], written
    assert seen[0] == ["round 0"] and seen[1] == ["round 0", "round 1"]
    assert seen[-1] == ["round 18", "round 19"]
    assert all(f"round {i}" in reasons for i, reasons in enumerate(seen))


@workflow.defn(name="GovernorWorkflow", sandboxed=False)
class MemolessGovernor:
    """A governor that holds a pause but never wrote the memo (one from before the memo, or
    any other reason a memo can be missing): what the brake query says must still count."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.query(name=Governor.BRAKE)
    def brake(self, entry_id: str) -> Brake:
        return Brake(paused=[Hold(by="bob", at=workflow.now(), reason="maintenance")])


async def test_a_governor_without_its_memo_is_asked_and_its_pause_holds(client, task_queue):
    """A missing memo is never read as "no brake": the executor's check asks with the query."""
    async with Worker(client, task_queue=task_queue, workflows=[MemolessGovernor]):
        handle = await client.start_workflow(MemolessGovernor.run, id=governor_id(task_queue), task_queue=task_queue)
        try:
            assert await read_brakes(client, task_queue) is None
            inp = RemediationInput(incident_id="i", idempotency_key="i/act/restart-web", whitelist_sha256="0" * 64,
                                   request=web("web-1"), autonomous=True)
            with pytest.raises(ApplicationError) as refused:
                await ActivityEnvironment().run(BrakeReader(client, task_queue).check, inp)
        finally:
            await handle.terminate("test over")
    assert refused.value.type == BRAKED and "autonomy paused by bob: maintenance" in str(refused.value)


async def test_incidents_shows_the_holds_from_the_memo_when_no_worker_runs(client, task_queue, tmp_path):
    """When the worker is down (when people reach for the CLI), `selfheal incidents` still
    says what holds autonomy back: the memo is read by a describe, which needs no worker,
    not the status query, which would wait out the CLI's 10 s and say nothing."""
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await announced_governor(client, task_queue)
        await handle.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason="maintenance"))
        await handle.execute_update(GovernorWorkflow.pause, Pause(by="carol", reason="flapping", entry_id="restart-db"))
        ended = datetime.now(timezone.utc) - timedelta(minutes=1)
        await handle.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason="over", entry_id="restart-web", until=ended))
    # The worker has stopped: nothing answers a query on this task queue now.
    def selfheal(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        began = time.monotonic()
        ran = subprocess.run([sys.executable, "-m", "selfheal.cli", *args, "--task-queue", task_queue,
                              "--address", client.service_client.config.target_host],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        return ran, time.monotonic() - began

    said = "autonomy: PAUSED for every entry by bob: maintenance; restart-db paused"
    listed, took = selfheal("incidents")
    assert listed.returncode == 0, listed.stderr
    assert next(line for line in listed.stdout.splitlines() if line.startswith("autonomy:")) == said, listed.stdout
    assert took < 8, f"took {took:.1f} s: waited on a worker"  # the query would have waited 10 s
    # `status` waits out its query (the ledgers need a worker), then still shows the holds, and fails.
    status, _ = selfheal("status")
    assert status.returncode == 1 and status.stdout.strip() == said, status.stdout + status.stderr
    assert "no worker answered" in status.stderr and "from the governor's memo" in status.stderr, status.stderr


async def test_an_oversized_message_is_refused_and_the_governor_goes_on(client, task_queue):
    """A pause whose reason is over the contract's bound (sent around the CLI, which refuses
    it before signing) is refused when the governor decodes it; nothing of it is kept, and
    the next pause is decided as ever."""
    async with Worker(client, task_queue=task_queue, workflows=worker_module.WORKFLOWS,
                      workflow_runner=worker_module.WORKFLOW_RUNNER):
        handle = await announced_governor(client, task_queue)
        for oversized in ({"by": "bob", "reason": "x" * 100_000}, {"by": "b" * 81, "reason": "r"},
                          {"by": "bob", "reason": "r", "entry_id": "e" * 81}):
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(Governor.PAUSE, oversized)
        answer = await handle.execute_update(GovernorWorkflow.pause, Pause(by="bob", reason="maintenance"))
        status = await handle.query(GovernorWorkflow.status)
        history = await handle.fetch_history()
    assert answer == "autonomy paused for every entry by bob" and status.pause_all.reason == "maintenance"
    assert max(len(e.SerializeToString()) for e in history.events) < 60_000  # the 100 KB reason is nowhere
