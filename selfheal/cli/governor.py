"""``selfheal pause|resume|breaker close|status``: the governor, from a terminal.

Thin adapters: each sends the governor workflow's update or query and prints the answer.
Who may do what is the governor's rule (``selfheal.workflows.governor``), not this file's; it speaks to
the governor by the names in ``selfheal.contract.governor``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli.common import (
    QUERY_TIMEOUT, AddressOption, NamespaceOption, connect_temporal, message, run_or_exit, send_update,
)
from selfheal.connection import TASK_QUEUE

TaskQueueOption = typer.Option(None, "--task-queue", envvar="SELFHEAL_TASK_QUEUE",
                               help=f"the deployment's task queue, which names its governor (default {TASK_QUEUE})")


OPTIONS = {"by": "--as", "reason": "--reason", "entry_id": "--entry"}  # a message's fields, as the commands name them


def _queue(task_queue: str | None) -> str:
    return task_queue or os.environ.get("SELFHEAL_TASK_QUEUE") or TASK_QUEUE


def _governor(client, task_queue: str | None):
    from selfheal.contract.governor import governor_id

    return client.get_workflow_handle(governor_id(_queue(task_queue)))


async def governor_status(client, task_queue, entries: bool = True):
    """The governor's status, or None when it has not started (no worker ran yet); with
    ``entries``, each entry's ledger from its own governor too."""
    from temporalio.service import RPCError, RPCStatusCode

    from selfheal.activities.governor import read_status
    from selfheal.contract.governor import Governor, GovernorStatus

    if entries:
        return await read_status(client, _queue(task_queue), QUERY_TIMEOUT)
    try:
        return await _governor(client, task_queue).query(Governor.STATUS, result_type=GovernorStatus,
                                                         rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def autonomy_line(address, namespace, task_queue) -> str:
    """``selfheal incidents``' line of what holds autonomy back: from the governor's memo,
    which Temporal answers with no worker running (when people reach for the CLI); from its
    status query when it has no memo yet."""
    from temporalio.service import RPCError, RPCStatusCode

    from selfheal.activities.governor import read_memo

    client = await connect_temporal(address, namespace)
    try:
        brakes = await read_memo(client, _queue(task_queue), QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return holds_line(None)
        raise
    if brakes is None:
        return holds_line(await governor_status(client, task_queue, entries=False))
    return holds_line(brakes.status(datetime.now(timezone.utc)))


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

    def _proof(action: str, name: str, entry: str | None, key: str | None, task_queue: str | None) -> dict:
        from selfheal.identity import attest
        from selfheal.identity.signing import signing_key
        from selfheal.contract.governor import governor_id

        subject = governor_id(_queue(task_queue))
        statement = attest.new_statement(action=action, subject=subject, entry=entry, person=name, channel="ssh")
        try:
            signature = attest.sign_ssh(statement.canonical(), signing_key(
                key, "leave out --sign (recorded as unverified)" if action == "pause" else ""))
        except attest.Unproven as exc:
            err.print(f"cannot sign: {exc}", markup=False)
            raise typer.Exit(1) from None
        return {"channel": "ssh", "statement": statement.canonical().decode(), "signature": signature}

    KeyOption = typer.Option(None, "--key", help="SSH key to sign with: a private key file, or a public key whose "
                             "private half is in ssh-agent (default: the agent's first key, then ~/.ssh/id_ed25519)")

    @app.command("pause")
    def pause(
        name: str = typer.Option(..., "--as", help="who pauses (anyone the whitelist names)"),
        reason: str = typer.Option(..., "--reason"),
        entry: str = typer.Option(None, "--entry", help="one entry; default: every entry"),
        duration: str = typer.Option(None, "--for", help="pause ends by itself after this long (2h, 30m)"),
        sign: bool = typer.Option(False, "--sign", help="sign it with your SSH key (recorded as verified)"),
        key: str = KeyOption,
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Turn every autonomous action (or one entry's) into an approval request, now."""
        from selfheal.contract.governor import Governor, Pause

        until = None
        if duration:
            from pydantic import TypeAdapter, ValidationError

            from selfheal.whitelist.durations import PositiveDuration

            try:
                until = datetime.now(timezone.utc) + TypeAdapter(PositiveDuration).validate_python(duration)
            except ValidationError as exc:
                err.print(f"--for {duration!r}: {exc.errors()[0]['msg']} (write 2h, 30m, 1h30m)", markup=False)
                raise typer.Exit(2) from None
        pause = message(err, Pause, OPTIONS, by=name, reason=reason, entry_id=entry, until=until)
        proof = _proof("pause", name, entry, key, task_queue) if sign or key else {}
        _send(Governor.PAUSE, pause.model_copy(update=proof), address, namespace, task_queue)

    @app.command("resume")
    def resume(
        name: str = typer.Option(..., "--as", help="who resumes (allowed to approve what it affects)"),
        entry: str = typer.Option(None, "--entry", help="one entry's pause; default: the pause of every entry"),
        key: str = KeyOption,
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Give autonomy back, signed with your SSH key. Incidents already waiting keep waiting."""
        from selfheal.contract.governor import Governor, Resume

        resume = message(err, Resume, OPTIONS, by=name, entry_id=entry)
        proof = _proof("resume", name, entry, key, task_queue)
        _send(Governor.RESUME, resume.model_copy(update=proof), address, namespace, task_queue)

    @breaker_app.command("close")
    def close(
        entry: str = typer.Argument(..., help="the entry whose breaker to close"),
        name: str = typer.Option(..., "--as", help="who closes it (allowed to approve the entry)"),
        reason: str = typer.Option(..., "--reason"),
        key: str = KeyOption,
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Close an entry's open breaker, signed with your SSH key: it may act alone again, as declared."""
        from selfheal.contract.governor import CloseBreaker, Governor

        close = message(err, CloseBreaker, OPTIONS | {"entry_id": "ENTRY"}, by=name, entry_id=entry, reason=reason)
        proof = _proof("close_breaker", name, entry, key, task_queue)
        _send(Governor.CLOSE_BREAKER, close.model_copy(update=proof), address, namespace, task_queue)

    @app.command("status")
    def status(
        as_json: bool = typer.Option(False, "--json"),
        address: str = AddressOption, namespace: str = NamespaceOption, task_queue: str = TaskQueueOption,
    ) -> None:
        """Paused entries, open breakers, and each entry's targets acted on alone in its window."""
        from selfheal.activities.governor import read_memo
        from selfheal.cli.common import NO_WORKER, unanswered

        async def read():
            client = await connect_temporal(address, namespace)
            try:
                return await governor_status(client, task_queue), None
            except Exception as exc:
                if not unanswered(exc):
                    raise
                try:
                    brakes = await read_memo(client, _queue(task_queue), QUERY_TIMEOUT)
                except Exception:  # noqa: BLE001 - the query's failure is the one to report
                    brakes = None
                if brakes is None:
                    raise exc from None
                return None, brakes.status(datetime.now(timezone.utc))

        state, holds = run_or_exit(read(), err, "cannot read the governor")
        if holds is not None:
            # No worker: the holds still show (the memo needs none); the ledgers and log do not.
            if as_json:
                out.print_json(holds.model_dump_json())
            else:
                out.print(holds_line(holds), markup=False, highlight=False, soft_wrap=True)
            err.print(f"{NO_WORKER}\nthe holds above are from the governor's memo; the entries' ledgers and its log "
                      "need a worker", markup=False)
            raise typer.Exit(1)
        if state is None:
            err.print("no governor yet: no worker has run on this task queue", markup=False)
            raise typer.Exit(1)
        if as_json:
            out.print_json(state.model_dump_json())
            return
        out.print(holds_line(state), markup=False, highlight=False, soft_wrap=True)
        table = Table(title=f"entries (whitelist {state.whitelist_sha256[:12]}, revision {state.revision})")
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

