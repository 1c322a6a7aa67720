"""What every command that talks to Temporal shares: where to connect, and sending an update."""

from __future__ import annotations

import asyncio
import os

import typer
from rich.console import Console

from selfheal.connection import QUERY_TIMEOUT

AddressOption = typer.Option(None, "--address", envvar="TEMPORAL_ADDRESS", help="Temporal frontend (default localhost:7233)")
NamespaceOption = typer.Option(None, "--namespace", envvar="TEMPORAL_NAMESPACE", help="namespace (default: default)")

NO_WORKER = (f"no worker answered within {QUERY_TIMEOUT.seconds} s: a running workflow is read through a "
             "`selfheal worker` on its task queue (is one running?)")


def debugging() -> bool:
    """``selfheal --debug`` (or SELFHEAL_DEBUG=1): expected failures raise, with their traceback."""
    return os.environ.get("SELFHEAL_DEBUG", "").lower() in ("1", "true", "yes")


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` is a query that no worker answered in time."""
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(exc, RPCError) and (exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
                                          or exc.message == "Timeout expired")


def message(err: Console, model, options: dict[str, str], **fields):
    """``model(**fields)``, checked before anything is signed or sent: a value the contract
    refuses (a name or a reason too long, an empty name) exits 2 naming the option."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            err.print(f"{options.get(field, field)}: {problem['msg']}", markup=False)
        raise typer.Exit(2) from None


async def connect_temporal(address: str | None, namespace: str | None):
    """A client as the temporal CLI would connect: its profile and TEMPORAL_* variables
    (TLS, API key; selfheal.connection), with --address and --namespace on top."""
    from selfheal.connection import ConnectionProblem, Overrides, connect, connect_config

    try:
        return await connect(connect_config(os.environ, Overrides(address=address, namespace=namespace)))
    except ConnectionProblem as exc:  # one line that says where and why, not a traceback
        if debugging():
            raise
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def send_update(out: Console, err: Console, handle_of, update: str, arg, address, namespace) -> None:
    """Send a workflow update and print its answer; a refusal prints the reason and exits 1."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    async def run() -> str:
        temporal = await connect_temporal(address, namespace)
        return await handle_of(temporal).execute_update(update, arg, result_type=str)

    try:
        out.print(asyncio.run(run()), markup=False)
    except WorkflowUpdateFailedError as exc:
        err.print(f"refused: {getattr(exc.cause, 'message', exc.cause)}", markup=False)
        raise typer.Exit(1) from None
    except RPCError as exc:
        err.print(f"refused: {exc.message}", markup=False)
        raise typer.Exit(1) from None


def run_or_exit(coro, err: Console, what: str):
    """Run ``coro``; a failure is one line, ``WHAT: why``, and exit 1. An exit already
    explained on the way (an unreachable server, from ``connect_temporal``) goes through."""
    try:
        return asyncio.run(coro)
    except typer.Exit:
        raise
    except Exception as exc:  # an unknown id, an unreachable namespace: say which
        if debugging():
            raise
        err.print(f"{what}: {NO_WORKER if unanswered(exc) else exc}", markup=False)
        raise typer.Exit(1) from None


async def ended_record(handle):
    """A closed incident's (or drill's) AuditRecord: its result, or, when its remediation
    failed, the details of the failure it ended with (``REMEDIATION_FAILED``). Read from
    Temporal alone: no worker needs to run. Any other failure is raised as it came."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    from selfheal.contract import AuditRecord
    from selfheal.contract.workflows import REMEDIATION_FAILED

    try:
        return AuditRecord.model_validate(await handle.result())
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == REMEDIATION_FAILED and cause.details:
            return AuditRecord.model_validate(cause.details[0])
        raise
