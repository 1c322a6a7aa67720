"""``selfheal incidents|show|approve|reject``: read and answer incidents through Temporal."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli.common import (
    NO_WORKER, QUERY_TIMEOUT, AddressOption, NamespaceOption, connect_temporal, ended_record, message, run_or_exit,
    send_update, unanswered,
)

# The contract, the search attributes and the Temporal client are imported by the commands
# that use them: `selfheal --help` and the whitelist commands never pay for them.

OPTIONS = {"approver": "--as", "comment": "--comment", "reason": "--reason", "confirm": "--confirm"}  # as the commands name them


def shown_status(outcome: str | None, stage: str | None, execution: str) -> str:
    """An incident's status on the list: its outcome; while it runs, the stage visibility
    holds; else how its workflow ended. A stage is never shown for an incident that ended
    without an outcome (terminated, say): the ingress writes the first one at start."""
    return outcome or (stage if execution == "running" and stage else execution)


def _age(start: datetime | None) -> str:
    if start is None:
        return "-"
    seconds = int((datetime.now(timezone.utc) - start).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def register(app: typer.Typer, out: Console, err: Console) -> None:
    @app.command("incidents")
    def incidents(
        open_only: bool = typer.Option(True, "--open/--all", help="only running incidents, or all"),
        limit: int = typer.Option(50, help="at most this many rows"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
        task_queue: str = typer.Option(None, "--task-queue", envvar="SELFHEAL_TASK_QUEUE",
                                       help="the deployment whose pauses and breakers to show (default selfheal)"),
    ) -> None:
        """List incidents (id, service, status, action, tier, age), and what holds autonomy back."""
        from selfheal import search
        from selfheal.cli.governor import autonomy_line
        from selfheal.contract.workflows import DRILL_WORKFLOW, INCIDENT_WORKFLOW

        async def holds() -> str:
            try:
                return await autonomy_line(address, namespace, task_queue)
            except Exception as exc:  # the list is still worth showing
                return f"autonomy: the governor could not be read ({NO_WORKER if unanswered(exc) else exc})"

        async def run():
            client = await connect_temporal(address, namespace)
            # Drills are listed as incidents are: on the list, a drill looks like any request.
            query = f'WorkflowType IN ("{INCIDENT_WORKFLOW}", "{DRILL_WORKFLOW}")' + (' AND ExecutionStatus = "Running"' if open_only else "")
            rows = []
            async for wf in client.list_workflows(query, limit=limit):
                attrs = wf.typed_search_attributes
                execution = wf.status.name.lower() if wf.status else "-"
                status = shown_status(attrs.get(search.OUTCOME), attrs.get(search.STATUS), execution)
                rows.append((
                    wf.id, attrs.get(search.SERVICE) or "-", status,
                    attrs.get(search.ENTRY) or "-", attrs.get(search.BLAST_RADIUS) or "-", _age(wf.start_time),
                ))
            return rows

        async def both():
            rows = await run()  # an unreachable server is said once, by the list's own connection
            return rows, await holds()

        rows, held = asyncio.run(both())
        out.print(held, markup=False, highlight=False, soft_wrap=True)
        table = Table(title=f"{'open' if open_only else 'all'} incidents")
        for column in ("id", "service", "status", "action", "tier", "age"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        out.print(table)

    @app.command("show")
    def show(
        incident_id: str = typer.Argument(..., help="the incident (workflow) id"),
        as_json: bool = typer.Option(False, "--json", help="the audit record as JSON"),
        markdown: bool = typer.Option(False, "--markdown", help="Markdown, for a ticket"),
        name: str = typer.Option(None, "--as", help="record that you read the evidence (signed with your SSH key)"),
        key: str = typer.Option(None, "--key", help="SSH key to sign the evidence view with (as for approve)"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
    ) -> None:
        """The audit record: observed, concluded, decided, approved, done, verified."""
        from temporalio.client import WorkflowExecutionStatus

        from selfheal.cli.render import as_markdown, as_text
        from selfheal.contract import AuditRecord
        from selfheal.contract.workflows import Incident

        async def run() -> AuditRecord:
            client = await connect_temporal(address, namespace)
            handle = client.get_workflow_handle(incident_id, result_type=AuditRecord)
            description = await handle.describe()
            if description.status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED):
                return await ended_record(handle)  # from Temporal alone, no worker needed
            return await handle.query(Incident.AUDIT, result_type=AuditRecord, rpc_timeout=QUERY_TIMEOUT)

        record = run_or_exit(run(), err, f"cannot show {incident_id}")
        if as_json:
            out.print_json(record.model_dump_json())
        elif markdown:
            out.print(as_markdown(record), markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(as_text(record), markup=False, highlight=False, soft_wrap=True)
        if name and record.status == "awaiting_approval":
            _viewed(incident_id, name, key, address, namespace)

    def _viewed(incident_id: str, name: str, key: str | None, address, namespace) -> None:
        """Tell the incident that ``name`` read its evidence: noted on their approval."""
        from selfheal.contract import Viewing
        from selfheal.contract.workflows import Incident
        from selfheal.identity import attest
        from selfheal.identity.signing import signing_key

        statement = attest.new_statement(action="evidence", subject=incident_id, person=name, channel="ssh")
        try:
            signature = attest.sign_ssh(statement.canonical(), signing_key(key))
        except attest.Unproven as exc:
            err.print(f"evidence view not recorded: {exc}", markup=False)
            return

        async def run() -> None:
            client = await connect_temporal(address, namespace)
            viewing = Viewing(person=name, channel="ssh", statement=statement.canonical().decode(), signature=signature)
            await client.get_workflow_handle(incident_id).signal(Incident.EVIDENCE_VIEWED, viewing)

        asyncio.run(run())
        err.print(f"recorded: {name} read the evidence of {incident_id}", markup=False)

    def _send(incident_id: str, update: str, arg, address, namespace) -> None:
        send_update(out, err, lambda client: client.get_workflow_handle(incident_id), update, arg, address, namespace)

    @app.command("approve")
    def approve(
        incident_id: str = typer.Argument(...),
        name: str = typer.Option(..., "--as", help="who approves (must be allowed by the entry)"),
        comment: str = typer.Option("", "--comment"),
        key: str = typer.Option(None, "--key", help="SSH key to sign with: a private key file, or a public key "
                                "whose private half is in ssh-agent (default: the agent's first key, then ~/.ssh/id_ed25519)"),
        confirm: str = typer.Option(None, "--confirm", help="the exact target, where the tier asks to confirm it "
                                    "(- asks for it at the prompt, or reads it from standard input)"),
        unsigned: bool = typer.Option(False, "--unsigned", help="send a typed name: recorded as unverified"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
    ) -> None:
        """Approve the incident's action, signed with your SSH key (the workflow's `approve` update)."""
        from selfheal.contract import Approval
        from selfheal.contract.workflows import Incident

        if confirm == "-":
            confirm = _typed_target(incident_id, address, namespace)
        approval = message(err, Approval, OPTIONS, approver=name, comment=comment, confirm=confirm)
        proof = {} if unsigned else _signed(incident_id, "approve", name, key, confirm, address, namespace)
        _send(incident_id, Incident.APPROVE, approval.model_copy(update=proof), address, namespace)

    @app.command("reject")
    def reject(
        incident_id: str = typer.Argument(...),
        name: str = typer.Option(..., "--as", help="who rejects (must be allowed by the entry)"),
        reason: str = typer.Option(..., "--reason"),
        key: str = typer.Option(None, "--key", help="SSH key to sign with (as for approve)"),
        unsigned: bool = typer.Option(False, "--unsigned", help="send a typed name: recorded as unverified"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
    ) -> None:
        """Reject the incident's action, signed with your SSH key (the workflow's `reject` update): nothing runs."""
        from selfheal.contract import Rejection
        from selfheal.contract.workflows import Incident

        rejection = message(err, Rejection, OPTIONS, approver=name, reason=reason)
        proof = {} if unsigned else _signed(incident_id, "reject", name, key, None, address, namespace)
        _send(incident_id, Incident.REJECT, rejection.model_copy(update=proof), address, namespace)

    def _decided(incident_id: str, action: str, address, namespace) -> AuditRecord:
        """The incident's record, which must have decided something to answer; exits with the reason if not."""
        from selfheal.contract import AuditRecord
        from selfheal.contract.workflows import Incident

        async def current() -> AuditRecord:
            client = await connect_temporal(address, namespace)
            return await client.get_workflow_handle(incident_id).query(Incident.AUDIT, result_type=AuditRecord,
                                                                       rpc_timeout=QUERY_TIMEOUT)

        try:
            record = asyncio.run(current())
        except typer.Exit:  # already said why (an unreachable server)
            raise
        except Exception as exc:  # an unknown id, an unreachable server
            err.print(f"cannot read {incident_id}: {NO_WORKER if unanswered(exc) else exc}", markup=False)
            raise typer.Exit(1) from None
        if record.decision is None or record.request is None:
            err.print(f"cannot {action}: {incident_id} has not decided anything to {action} yet (status: {record.status})",
                      markup=False)
            raise typer.Exit(1)
        return record

    def _typed_target(incident_id: str, address, namespace) -> str:
        """``--confirm -``: the person types the target (a prompt on a terminal, else a line of
        standard input), so the line a notification prints runs as printed and confirming
        stays typing, not pasting."""
        from selfheal.identity import attest

        expected = attest.confirmation_text(_decided(incident_id, "approve", address, namespace).request)
        try:
            return typer.prompt(f"type the target to approve ({expected})", err=True).strip()
        except typer.Abort:  # end of input (or Ctrl-C) before a target: nothing is sent
            err.print(f"\ncannot approve: no target was typed (--confirm - reads it from the terminal or standard "
                      f"input); nothing was sent to {incident_id}", markup=False)
            raise typer.Exit(1) from None

    def _signed(incident_id: str, action: str, name: str, key: str | None, confirm: str | None, address, namespace) -> dict:
        """Sign a statement about the incident's current decision; exits with the reason if it cannot."""
        from selfheal.identity import attest
        from selfheal.identity.signing import signing_key

        record = _decided(incident_id, action, address, namespace)
        try:
            statement = attest.new_statement(
                action=action, subject=incident_id, entry=record.decision.entry_id, target=record.request.target,
                decision=attest.decision_digest(record.decision), person=name, channel="ssh", confirm=confirm)
            data = statement.canonical()
            signature = attest.sign_ssh(data, signing_key(key, "send --unsigned (recorded as unverified)"))
        except attest.Unproven as exc:
            err.print(f"cannot sign: {exc}", markup=False)
            raise typer.Exit(1) from None
        return {"channel": "ssh", "statement": data.decode(), "signature": signature}
