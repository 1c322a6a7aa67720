"""A worker picks up a new whitelist on SIGHUP, refuses an invalid one and keeps the old.
In-flight incidents keep the hash they decided under; the reservation right before acting
decides again under the current whitelist, so a narrowed whitelist stops what it no longer
allows until people decide."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

from temporalio.service import RPCError

from selfheal.activities.governor import announce_whitelist
from selfheal.current_whitelist import CurrentWhitelist
from selfheal.contract import Approval, AuditRecord
from selfheal.whitelist import load_whitelist
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import (NotificationSink, alert, rules_yaml, settings_for, start_incident, wait_for,
                                     wait_status, whitelist_yaml, running_worker)
from tests.workflows.test_incident_aws import RULES, WHITELIST
from tests.workflows.test_worker_process import stop, worker_process


def test_reload_refuses_an_invalid_whitelist_and_keeps_the_old(tmp_path: Path, caplog):
    path = tmp_path / "wl.yaml"
    path.write_text(WHITELIST)
    current = CurrentWhitelist(load_whitelist(path))
    first = current.sha256
    path.write_text(WHITELIST.replace("max_executions: 5", "max_executions: lots", 1))
    with caplog.at_level(logging.INFO, "selfheal.worker"):
        assert current.reload() is False
    assert current.sha256 == first and current.whitelist.entry("rollback-checkout").rate_limit.max_executions == 5
    assert "max_executions" in caplog.text and "reload refused" in caplog.text
    path.write_text(WHITELIST)
    assert current.reload() is False  # unchanged: nothing to do
    path.write_text(WHITELIST.replace("max_executions: 5", "max_executions: 2", 1))
    assert current.reload() is True
    assert current.sha256 != first and current.whitelist.entry("rollback-checkout").rate_limit.max_executions == 2


async def test_a_tier_raised_while_waiting_asks_people_again(client, task_queue, tmp_path, aws_world):
    raised = WHITELIST.replace("account: \"123456789012\"}\n    blast_radius: service", "account: \"123456789012\"}\n    blast_radius: fleet", 1)
    assert raised != WHITELIST
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=WHITELIST, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()) as current:
            first = current.sha256
            handle = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            await wait_status(handle, "awaiting_approval")
            Path(settings.whitelist).write_text(raised)
            assert current.reload()
            await announce_whitelist(client, task_queue, current)  # as the worker does after SIGHUP
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))

            async def asked_again():
                record = await handle.query(IncidentWorkflow.audit)
                return record.status == "awaiting_approval" and record.earlier_decisions and record
            waiting: AuditRecord = await wait_for(asked_again)
            assert aws_world.writes() == []  # nothing ran on one approval
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="bob"))
            record: AuditRecord = await handle.result()
    assert waiting.decision.tier == "fleet" and waiting.decision.approvals == 2
    assert record.outcome == "remediated", record.outcome_detail
    assert record.whitelist_sha256 == first != current.sha256  # decided under the old one ...
    assert record.reserved_under_sha256 == current.sha256      # ... acted under the new one


async def test_an_entry_removed_while_waiting_never_runs(client, task_queue, tmp_path, aws_world):
    start = WHITELIST.index("  - id: rollback-checkout")
    end = WHITELIST.index("  - id: scale-queue-workers")
    removed = WHITELIST[:start] + WHITELIST[end:]
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "unused.service", task_queue, sink.url, whitelist=WHITELIST, rules=RULES)
        async with running_worker(client, settings, aws=aws_world.clients()) as current:
            handle = await start_incident(client, task_queue, alert("CheckoutErrorRate"))
            await wait_status(handle, "awaiting_approval")
            Path(settings.whitelist).write_text(removed)
            assert current.reload()
            await announce_whitelist(client, task_queue, current)  # as the worker does after SIGHUP
            await handle.execute_update(IncidentWorkflow.approve, Approval(approver="alice"))
            record: AuditRecord = await handle.result()
    assert record.outcome == "denied" and "unknown_entry" in record.outcome_detail, record.outcome_detail
    assert record.remediation is None and aws_world.writes() == []
    assert "escalation" in sink.kinds(handle.id)  # people decide


async def test_a_worker_process_reloads_on_sighup(temporal_env, task_queue, tmp_path):
    unit = "reload-test.service"
    log = tmp_path / "worker.log"
    proc = worker_process(temporal_env, task_queue, tmp_path, whitelist_yaml(unit), rules_yaml(unit), [], log)
    path = tmp_path / "wl.yaml"
    try:
        await wait_for(lambda: _logged(log, "worker polling"), timeout=60)
        first = load_whitelist(path).sha256
        path.write_text(whitelist_yaml(unit).replace("blast_radius: instance", "blast_radius: galaxy", 1))
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: _logged(log, "reload refused"), timeout=30)
        assert proc.poll() is None  # still running, under the old whitelist
        path.write_text(whitelist_yaml(unit, max_executions=2))
        second = load_whitelist(path).sha256
        assert second != first
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: _logged(log, f"-> {second}"), timeout=30)
        handle = await start_incident(temporal_env.client, task_queue, alert("ApiSlow"))

        async def recorded():
            record = await handle.query(IncidentWorkflow.audit)
            return record.whitelist_sha256
        assert await wait_for(recorded, timeout=60) == second  # new incidents record the new hash
        with contextlib.suppress(RPCError):  # it may already have ended (the unit does not exist)
            await handle.terminate("test over")
        assert stop(proc) == 0, log.read_text()[-4000:]
    finally:
        stop(proc)
    text = log.read_text()
    assert "galaxy" in text and f"sha256 {first} -> {second}" in text


async def _logged(log: Path, words: str) -> bool:
    return log.exists() and words in log.read_text()
