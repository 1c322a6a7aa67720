"""``selfheal dev`` prints the exact approve line of each incident that comes to wait.

An incident's id is known only once its alert has arrived, so the startup banner cannot
print a line that runs as printed; this watcher does, when the incident asks: one line per
demo approver the decision allows, signed with that person's demo key, against this stack.
It reads the list Temporal keeps (selfheal's status search attribute) once a second, the
newest few only, and tells of the first few incidents: then it says how to list the rest
and stops, so a thousand waiting incidents cost it a few queries, not a thousand, and never
more output than a person reads (or a pipe nobody drains holds).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from temporalio.client import Client

from selfheal import search
from selfheal.contract import AuditRecord
from selfheal.connection import QUERY_TIMEOUT
from selfheal.contract.workflows import DRILL_WORKFLOW, INCIDENT_WORKFLOW, Incident
from selfheal.whitelist import Whitelist
from selfheal.workflows.ui_details import approve_line

log = logging.getLogger("selfheal.dev")
# Drills too: to the person approving, a drill looks like any request (docs/concepts/drills.md).
QUERY = (f'WorkflowType IN ("{INCIDENT_WORKFLOW}", "{DRILL_WORKFLOW}") AND ExecutionStatus = "Running" '
         f'AND {search.STATUS.name} = "awaiting_approval"')
NEWEST = 20   # incidents read per look: a person approves the ones they just fired
EVERY = 1.0   # seconds between looks
TOLD = 10     # incidents told of, at most


def shown(text: str) -> str:
    """``text`` safe for a terminal: a character it would act on (an escape sequence in an
    id started by something other than the ingress, which allows none) is written as code."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def approve_lines(command: str, where: str, record: AuditRecord, whitelist: Whitelist, keys: dict[str, Path]) -> list[str]:
    """What to run to approve ``record``'s action as each demo person it allows (none for an
    id a terminal would act on: no line with it could run as printed)."""
    if shown(record.incident_id) != record.incident_id:
        return []
    decision = record.decision
    confirm = whitelist.confirms(decision.tier)
    return [approve_line(record.incident_id, who, confirm, command=command, key=str(keys[who]), where=where)
            for who in keys if who in decision.approvers]


def announcement(record: AuditRecord, lines: list[str]) -> str:
    d = record.decision
    head = f"{shown(record.incident_id)} waits for {d.approvals} approval(s) of {d.entry_id} ({d.tier} tier)"
    if shown(record.incident_id) != record.incident_id:
        return f"{head}; its id has characters a terminal acts on, so no approve line is printed for it"
    if not lines:
        return f"{head}; no demo key may approve it (approvers: {', '.join(d.approvers)})"
    return head + ". Approve it, signed with a demo key:\n" + "\n".join(f"  {line}" for line in lines)


def query(task_queue: str, since: datetime | None) -> str:
    """This stack's waiting incidents; with ``since``, only those started after it (on
    someone's cluster, ``--temporal-profile``, not the incidents of the people who run it)."""
    return f'{QUERY} AND TaskQueue = "{task_queue}"' + (f' AND StartTime > "{since.isoformat()}"' if since else "")


async def print_approve_lines(client: Client, whitelist: Whitelist, keys: dict[str, Path], command: str, where: str,
                              stop: asyncio.Event, task_queue: str, since: datetime | None = None) -> None:
    """Until ``stop``: print each newly waiting incident's approve lines, once."""
    told: set[str] = set()
    listing = query(task_queue, since)
    while not stop.is_set():
        if len(told) >= TOLD:
            print(f"More incidents may wait; list them with:\n  {command} incidents {where}", flush=True)
            return
        try:
            async for wf in client.list_workflows(listing, limit=NEWEST):
                if wf.id in told or len(told) >= TOLD:
                    continue
                handle = client.get_workflow_handle(wf.id)
                record = await handle.query(Incident.AUDIT, result_type=AuditRecord, rpc_timeout=QUERY_TIMEOUT)
                if record.status != "awaiting_approval" or record.decision is None:
                    continue  # the list is a moment behind: approved already, or not yet asking
                told.add(wf.id)
                print(announcement(record, approve_lines(command, where, record, whitelist, keys)), flush=True)
        except Exception as exc:  # the stack is stopping, or the server is busy: look again
            log.debug("could not list waiting incidents: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), EVERY)
        except asyncio.TimeoutError:
            pass
