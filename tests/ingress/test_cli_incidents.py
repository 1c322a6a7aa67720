"""`selfheal approve|reject|show|incidents` against a running incident, as a terminal user runs them."""

import asyncio
import sys
from pathlib import Path

from selfheal.contract import AuditRecord
from tests.workflows.helpers import alert, ended, start_incident, wait_status

ROOT = Path(__file__).resolve().parents[2]


async def selfheal(temporal_env, *args: str) -> tuple[int, str, str]:
    # Asynchronous: the worker shares this event loop and must answer the CLI's update.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "selfheal.cli", *args, "--address", temporal_env.client.service_client.config.target_host,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


# Typed names (--unsigned) count for this whitelist's tiers; signed approvals: tests/workflows/test_signed_approvals.py
async def test_approve_refuses_the_wrong_person_then_accepts_and_show_tells_the_story(temporal_env, client, task_queue, worker):
    handle = await start_incident(client, task_queue, alert("IngressTest", service="checkout"))
    await wait_status(handle, "awaiting_approval")

    code, out, _ = await selfheal(temporal_env, "incidents", "--open")
    assert code == 0 and handle.id in out and "checkout" in out and "rollback-ingress" in out

    code, _, err = await selfheal(temporal_env, "approve", handle.id, "--as", "mallory", "--unsigned")
    assert code == 1 and "refused" in err and "'mallory' may not approve rollback-ingress" in err

    code, out, _ = await selfheal(temporal_env, "approve", handle.id, "--as", "alice", "--comment", "looks right", "--unsigned")
    assert code == 0 and "approved by alice (1 of 1)" in out

    record: AuditRecord = await ended(client.get_workflow_handle(handle.id, result_type=AuditRecord))
    # this worker reaches no AWS (tests/activities/test_aws_executors.py has moto): it says so
    assert record.outcome == "failed" and "read_world failed" in record.outcome_detail
    assert "no AWS in this test" in record.outcome_detail

    code, out, _ = await selfheal(temporal_env, "show", handle.id)
    assert code == 0
    for heading in ("Observed:", "Concluded:", "Decided:", "Approved:", "Done:", "Verified:", "Outcome:"):
        assert heading in out
    assert "refused by mallory via update [unverified, not verified" in out
    assert "approved by alice via update [unverified, not verified, " in out and "s after the request]: looks right" in out

    code, out, _ = await selfheal(temporal_env, "show", handle.id, "--json")
    assert AuditRecord.model_validate_json(out) == record
    code, out, _ = await selfheal(temporal_env, "show", handle.id, "--markdown")
    assert out.startswith(f"## Incident `{handle.id}` — failed")


async def test_reject_needs_a_reason_and_ends_the_incident(temporal_env, client, task_queue, worker):
    handle = await start_incident(client, task_queue, alert("IngressTest"))
    await wait_status(handle, "awaiting_approval")
    code, _, err = await selfheal(temporal_env, "reject", handle.id, "--as", "alice")
    assert code == 2 and "--reason" in err
    code, out, _ = await selfheal(temporal_env, "reject", handle.id, "--as", "alice", "--reason", "not now", "--unsigned")
    assert code == 0 and "rejected by alice" in out
    record = await client.get_workflow_handle(handle.id, result_type=AuditRecord).result()
    assert record.outcome == "rejected"


async def test_show_of_an_unknown_incident_fails_clearly(temporal_env):
    code, _, err = await selfheal(temporal_env, "show", "no-such-incident")
    assert code == 1 and "cannot show no-such-incident" in err
