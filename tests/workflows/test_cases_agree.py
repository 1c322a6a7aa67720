"""The decision ``selfheal whitelist test`` computes is the one a real incident gets (issue
26): demo cases fed through real incidents on the dev server, with the entry's governor
started in the state the case describes, and the recorded decisions compared."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from selfheal.contract.governor import ENTRY_GOVERNOR_WORKFLOW, EntryState, entry_governor_id, governor_queue
from selfheal.review.cases import load_cases, run_case
from selfheal.settings import WorkerSettings
from selfheal.activities.diagnose import load_rules
from selfheal.whitelist import Execution, load_whitelist
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import FAST, alert, offline_aws, running_worker, start_incident, wait_for

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "deploy/demo"
CASES = load_cases(DEMO / "whitelist.test.yaml")
# Cases whose decision needs no systemd and no AWS to reach: the rest run in the fast tier only.
AGREED = ["a checkout rollback waits for one person of sre or dave, to the pinned revision only",
          "the payments webhook rollback needs two, from payments on-call or sre",
          "a fourth restart within the hour is denied by the rate limit"]


async def _decided(handle):
    async def probe():
        record = await handle.query(IncidentWorkflow.audit)
        return record if record.decision is not None else None
    return await wait_for(probe, timeout=60)


@pytest.mark.parametrize("name", AGREED)
async def test_a_real_incident_decides_what_the_case_says(name, client, task_queue):
    case = next(c for c in CASES.cases if c.name == name)
    whitelist = load_whitelist(DEMO / CASES.whitelist).whitelist
    now = datetime.now(timezone.utc)
    expected = await run_case(case, whitelist, load_rules(DEMO / CASES.rules), now)
    entry_id = expected.got["proposal"]
    if case.governor.executions:  # the entry's governor, in the state the case states
        await client.start_workflow(
            ENTRY_GOVERNOR_WORKFLOW,
            EntryState(entry_id=entry_id, executions=[
                Execution(entry_id=entry_id, started_at=now - e.ago, incident_id=f"earlier-{n}", targets=e.targets or
                          ["localhost"], autonomous=e.autonomous) for n, e in enumerate(case.governor.executions)]),
            id=entry_governor_id(task_queue, entry_id), task_queue=governor_queue(task_queue))
    settings = WorkerSettings(task_queue=task_queue, whitelist=str(DEMO / CASES.whitelist),
                              diagnosis=str(DEMO / CASES.rules), incident=FAST)
    [labels] = [a.labels for a in case.alerts]
    async with running_worker(client, settings, aws=offline_aws()):
        handle = await start_incident(client, task_queue, alert(labels["alertname"], **{
            k: v for k, v in labels.items() if k != "alertname"}))
        record = await _decided(handle)
        if record.outcome is None:  # it waits for people: the decision is what this test reads
            await handle.terminate("the test is done with it")
    d = record.decision
    got = {"matched": record.matched_entries, "proposal": record.diagnosis.proposal, "decision": d.kind, "rule": d.rule,
           "tier": d.tier, "declared_tier": d.declared_tier, "approvals": d.approvals, "approvers": d.approvers,
           "target": dict(record.request.target)}
    assert got == {k: expected.got[k] for k in got}, (got, expected.got)
    assert expected.ok, expected.failures
