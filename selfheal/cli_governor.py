"""``selfheal pause|resume|breaker close|status``: the governor, from a terminal.

Thin adapters: each sends the governor workflow's update or query and prints the answer.
Who may do what is the governor's rule (``selfheal.workflows.governor``), not this file's.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli_incidents import AddressOption, NamespaceOption, _client, send_update
from selfheal.settings import TASK_QUEUE
from selfheal.whitelist.durations import PositiveDuration

TaskQueueOption = typer.Option(None, "--task-queue", envvar="SELFHEAL_TASK_QUEUE",
                               help=f"the deployment's task queue, which names its governor (default {TASK_QUEUE})")


def _governor(client, task_queue: str | None):
    from selfheal.workflows.governor import governor_id

    return client.get_workflow_handle(governor_id(task_queue or os.environ.get("SELFHEAL_TASK_QUEUE") or TASK_QUEUE))


async def governor_status(address, namespace, task_queue):
    """The governor's status, or None when it has not started (no worker ran yet)."""
    from temporalio.service import RPCError, RPCStatusCode

    from selfheal.workflows.governor import GovernorStatus, GovernorWorkflow

    client = await _client(address, namespace)
    try:
        return await _governor(client, task_queue).query(GovernorWorkflow.status, result_type=GovernorStatus)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def holds_line(status) -> str:
    """One line for `selfheal incidents`: what takes autonomy away right now."""
    if status is None:
        return "autonomy: no governor yet (no worker has run on this task queue)"
    parts = []
    if status.pause_all:
        parts.append(f"PAUSED for every entry by {status.pause_all.by}: {status.pause_all.reason}")
    for entry in status.entries:
        if any(h != status.pause_all for h in entry.paused):
            parts.append(f"{entry.entry_id} paused")
        if entry.breaker:
            parts.append(f"{entry.entry_id} breaker OPEN")
    return "autonomy: " + ("; ".join(parts) if parts else "on (no pause, no open breaker)")


def register(app: typer.Typer, out: Console, err: Console) -> None:
    breaker_app = typer.Typer(no_args_is_help=True, help="An entry's circuit breaker.")
    app.add_typer(breaker_app, name="breaker")

    def _send(update: str, arg, address, namespace, task_queue) -> None:
        send_update(out, err, lambda client: _governor(client, task_queue), update, arg, address, namespace)

    @app.command("pause")
    def pause(
        name: str = typer.Option(..., "--as", help="who pauses (anyone the whitelist names)"),
        reason: str = typer.Option(..., "--reason"),
        entry: str = typer.Option(None, "--entry", help="one entry; default: every entry"),
        duration: str = typer.Option(None, "--for", help="pause ends by itself after this long (2h, 30m)"),
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Turn every autonomous action (or one entry's) into an approval request, now."""
        from selfheal.workflows.governor import Pause

        until = None
        if duration:
            from pydantic import TypeAdapter, ValidationError

            try:
                until = datetime.now(timezone.utc) + TypeAdapter(PositiveDuration).validate_python(duration)
            except ValidationError as exc:
                err.print(f"--for {duration!r}: {exc.errors()[0]['msg']} (write 2h, 30m, 1h30m)", markup=False)
                raise typer.Exit(2) from None
        _send("pause", Pause(by=name, reason=reason, entry_id=entry, until=until), address, namespace, task_queue)

    @app.command("resume")
    def resume(
        name: str = typer.Option(..., "--as", help="who resumes (allowed to approve what it affects)"),
        entry: str = typer.Option(None, "--entry", help="one entry's pause; default: the pause of every entry"),
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Give autonomy back. Incidents already waiting keep waiting for their approvals."""
        from selfheal.workflows.governor import Resume

        _send("resume", Resume(by=name, entry_id=entry), address, namespace, task_queue)

    @breaker_app.command("close")
    def close(
        entry: str = typer.Argument(..., help="the entry whose breaker to close"),
        name: str = typer.Option(..., "--as", help="who closes it (allowed to approve the entry)"),
        reason: str = typer.Option(..., "--reason"),
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Close an entry's open breaker: its requests may act alone again, as declared."""
        from selfheal.workflows.governor import CloseBreaker

        _send("close_breaker", CloseBreaker(by=name, entry_id=entry, reason=reason), address, namespace, task_queue)

    @app.command("status")
    def status(
        as_json: bool = typer.Option(False, "--json"),
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Paused entries, open breakers, and each entry's targets acted on alone in its window."""
        try:
            state = asyncio.run(governor_status(address, namespace, task_queue))
        except Exception as exc:  # an unreachable server: say so
            err.print(f"cannot read the governor: {exc}", markup=False)
            raise typer.Exit(1) from None
        if state is None:
            err.print("no governor yet: no worker has run on this task queue", markup=False)
            raise typer.Exit(1)
        if as_json:
            out.print_json(state.model_dump_json())
            return
        out.print(holds_line(state), markup=False, highlight=False, soft_wrap=True)
        table = Table(title=f"entries (whitelist {state.whitelist_sha256[:12]})")
        for column in ("entry", "paused", "breaker", "acted on alone (window)", "runs in rate window", "failures"):
            table.add_column(column, overflow="fold")
        for e in state.entries:
            paused = "; ".join(f"by {h.by}: {h.reason}" + (f" (until {h.until:%H:%M})" if h.until else "") for h in e.paused)
            breaker = f"OPEN since {e.breaker.at:%Y-%m-%d %H:%M}: {e.breaker.reason}" if e.breaker else "closed"
            table.add_row(e.entry_id, paused or "-", breaker, f"{', '.join(e.autonomous_targets) or '-'} ({e.window})",
                          str(e.executions_in_rate_window), str(len(e.recent_failures)))
        out.print(table)
        for event in state.log[-10:]:
            out.print(f"{event.at:%Y-%m-%d %H:%M:%S} {event.by} {event.action} {event.entry_id or 'every entry'}"
                      f"{': ' + event.reason if event.reason else ''}", markup=False, highlight=False, soft_wrap=True)

