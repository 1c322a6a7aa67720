"""``selfheal diagnose-replay``: compare today's diagnoser with what past incidents proposed.

A thin adapter over ``selfheal.review.replay``: it lists closed incidents, replays each one's
recorded evidence through the diagnoser the environment configures (the same variables
as the worker: SELFHEAL_DIAGNOSER, SELFHEAL_LLM_*, SELFHEAL_DIAGNOSIS, SELFHEAL_EVIDENCE,
SELFHEAL_WHITELIST), and prints then / now / what people decided. It acts on nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta, timezone

import typer

from selfheal.cli.common import AddressOption, NamespaceOption, connect_temporal, ended_record


def parse_since(text: str) -> timedelta:
    """``--since`` as reviewers write durations (30d, 12h, 90m); a ValueError names the value."""
    from pydantic import TypeAdapter

    from selfheal.whitelist.durations import PositiveDuration

    return TypeAdapter(PositiveDuration).validate_python(text)


def window_query(since: timedelta, types: tuple[str, ...], closed_only: bool = True) -> str:
    """The visibility query for workflows of ``types`` that started within ``since``."""
    start = (datetime.now(timezone.utc) - since).strftime("%Y-%m-%dT%H:%M:%SZ")
    kinds = " OR ".join(f"WorkflowType = '{t}'" for t in types)
    return f"({kinds})" + (" AND ExecutionStatus != 'Running'" if closed_only else "") + f" AND StartTime > '{start}'"


async def retention_days(client, namespace: str) -> float | None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    ttl = described.config.workflow_execution_retention_ttl
    return (ttl.seconds + ttl.nanos / 1e9) / 86400 if ttl.seconds or ttl.nanos else None


async def replay(address, namespace, since_text: str, limit: int) -> tuple[list[dict], str]:
    import httpx

    from selfheal.contract import AuditRecord
    from selfheal.contract.workflows import INCIDENT_WORKFLOW
    from selfheal.review.replay import replay_one
    from selfheal.settings import WorkerSettings

    since = parse_since(since_text)
    settings = WorkerSettings.from_mapping(dict(os.environ))
    client = await connect_temporal(address, namespace)
    days = await retention_days(client, client.namespace)
    reach = (f"history reaches back {days:g} days (the namespace's retention)" if days else "the namespace keeps history forever")
    if days and since.total_seconds() > days * 86400:
        reach += f"; --since {since_text} asks for more than it keeps"
    query = window_query(since, (INCIDENT_WORKFLOW,))
    catalog = None
    if settings.evidence:
        from selfheal.evidence.config import EvidenceConfig

        catalog = EvidenceConfig.load(settings.evidence).record()
    records = []
    async with httpx.AsyncClient() as http:
        turns = None
        if settings.incident.diagnoser == "llm" and settings.llm is not None:
            from selfheal.activities.agent import ModelTurns
            from selfheal.activities.llm import client_for

            turns = ModelTurns(client_for(settings.llm, http))
        async for execution in client.list_workflows(query, limit=limit):
            try:
                audit = await ended_record(client.get_workflow_handle(execution.id, run_id=execution.run_id,
                                                                     result_type=AuditRecord))
            except Exception as exc:  # noqa: BLE001 - a terminated run (or a bug's failure) has no record to compare
                records.append({"incident": execution.id, "skipped": f"no audit record ({type(exc).__name__})"})
                continue
            try:
                records.append(await replay_one(client, audit, settings, turns, catalog))
            except Exception as exc:  # noqa: BLE001 - one incident's failure is reported on its line; the rest go on
                records.append({"incident": execution.id, "skipped": f"replay failed: {type(exc).__name__}: {str(exc)[:300]}"})
    return records, reach


def register(app: typer.Typer, out, err) -> None:
    @app.command("diagnose-replay")
    def diagnose_replay(
        since: str = typer.Option("30d", "--since", help="incidents that started within this long (30d, 12h)"),
        limit: int = typer.Option(200, "--limit", help="at most this many incidents, newest first"),
        as_json: bool = typer.Option(False, "--json", help="one JSON document"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
    ) -> None:
        """Run past incidents' recorded evidence through the configured diagnoser, offline, without acting."""
        try:
            records, reach = asyncio.run(replay(address, namespace, since, limit))
        except ValueError as exc:
            err.print(f"diagnose-replay: {exc}", markup=False)
            raise typer.Exit(2) from None
        done = [r for r in records if "skipped" not in r]
        summary = (f"{len(done)} incident(s): {sum(not r['changed'] for r in done)} proposal(s) unchanged, "
                   f"{sum(r['changed'] for r in done)} changed, {sum(r['now']['proposal'] is None for r in done)} now propose nothing")
        if as_json:
            print(json.dumps({"incidents": records, "summary": summary, "history": reach}, indent=2))
            return
        for r in records:
            if "skipped" in r:
                out.print(f"{r['incident']}: skipped, {r['skipped']}", markup=False)
                continue
            fmt = lambda p: (p["proposal"] or "nothing") + (f" {p['params']}" if p["params"] else "")  # noqa: E731
            rules = f" (rules: {fmt(r['then_rules'])})" if r["then_rules"] else ""
            out.print(f"{r['incident']}  {r['started_at']}  {r['outcome']}\n"
                      f"  then:   {fmt(r['then'])}{rules}\n  now:    {fmt(r['now'])}  [{r['now_by']}]"
                      f"{'  CHANGED' if r['changed'] else ''}\n  people: {r['people']}", markup=False, highlight=False)
        out.print(summary, markup=False)
        out.print(reach, markup=False)
