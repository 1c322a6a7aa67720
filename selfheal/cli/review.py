"""``selfheal review``: the evidence for changing the agent's judgment or the whitelist.

A thin adapter over ``selfheal.review``: it lists the incidents and drills that started
within ``--since`` through Temporal visibility (the same window as ``diagnose-replay``),
reads each closed one's audit record (bounded: ``--limit``, a few at a time), counts
running ones as open without waiting for them, and prints the review as text, JSON or
Markdown. It acts on nothing: no workflow is started, signalled or updated.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli.common import AddressOption, NamespaceOption, connect_temporal, ended_record, run_or_exit
from selfheal.cli.replay import parse_since, retention_days, window_query

if TYPE_CHECKING:  # annotations only: the review's models are imported when it runs
    from selfheal.contract import AuditRecord
    from selfheal.review import OpenItem, Review

# Each result is one history read on the frontend; 16 at a time reads thousands of
# incidents in seconds without crowding a small cluster's per-namespace request limit.
FETCH_CONCURRENCY = 16
DEFAULT_LIMIT = 5000
SAME_ALERTS_SHOWN = 10  # per shadow entry in text and Markdown; the JSON has them all


async def gather(client, since: timedelta, limit: int) -> tuple[list[AuditRecord], list[OpenItem], list[str], bool]:
    """Closed records, open workflows, closed ones without a record, and whether --limit was reached."""
    from selfheal import search
    from selfheal.contract import AuditRecord
    from selfheal.contract.workflows import DRILL_WORKFLOW as DRILL, INCIDENT_WORKFLOW as INCIDENT
    from selfheal.review import OpenItem
    from temporalio.client import WorkflowExecutionStatus

    gate = asyncio.Semaphore(FETCH_CONCURRENCY)
    opened: list[OpenItem] = []
    unreadable: list[str] = []
    reads = []
    seen = 0

    async def read(execution) -> AuditRecord | None:
        async with gate:
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=AuditRecord)
            try:
                return await ended_record(handle)
            except Exception as exc:  # noqa: BLE001 - a result that is not an audit record is reported, not fatal
                unreadable.append(f"{execution.id} ({type(exc).__name__})")
                return None

    async for execution in client.list_workflows(window_query(since, (INCIDENT, DRILL), closed_only=False), limit=limit):
        seen += 1
        if execution.status == WorkflowExecutionStatus.RUNNING:
            opened.append(OpenItem(id=execution.id, drill=execution.workflow_type == DRILL,
                                   entry=execution.typed_search_attributes.get(search.ENTRY)))
        elif execution.status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED):
            reads.append(asyncio.create_task(read(execution)))  # a failed remediation's record is its failure's
        else:  # terminated, timed out, cancelled: no audit record to read
            unreadable.append(f"{execution.id} ({execution.status.name.lower() if execution.status else 'unknown'})")
    records = [r for r in await asyncio.gather(*reads) if r is not None]
    return records, opened, unreadable, seen >= limit


async def review_with(client, since: timedelta, limit: int, whitelist, now: datetime | None = None) -> Review:
    """The review the command prints, on an open client; ``whitelist`` is a loaded Whitelist or None."""
    from selfheal.review import build_review

    days = await retention_days(client, client.namespace)
    records, opened, unreadable, reached = await gather(client, since, limit)
    return build_review(records, whitelist=whitelist, now=now or datetime.now(timezone.utc), since=since,
                        retention_days=days, opened=opened, unreadable=unreadable, limit=limit, limit_reached=reached)


# --- rendering -------------------------------------------------------------------------

def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s" if value >= 1 else f"{value:.1f} s"


ENTRY_COLUMNS = ("entry", "mode", "incidents", "open", "alone", "asked", "approved", "rejected", "expired",
                 "remediated", "verify failed", "shadowed", "denied by rule", "escalations")
APPROVER_COLUMNS = ("person", "approved", "rejected", "approve rate", "median to approve", "fast", "unverified",
                    "refused", "drills caught", "drills missed")


def entry_rows(review: Review) -> list[tuple[str, ...]]:
    return [(f.entry, f.mode or "not in whitelist", *map(str, (f.incidents, f.open, f.autonomous, f.asked, f.approved,
             f.rejected, f.expired, f.remediated, f.verification_failed, f.shadowed)), _counts(f.denials), _counts(f.escalations))
            for f in review.entries]


def approver_rows(review: Review) -> list[tuple[str, ...]]:
    return [(p.person, str(p.approved), str(p.rejected), "-" if p.approve_rate is None else f"{p.approve_rate:.0%}",
             _seconds(p.median_seconds_to_approve), str(p.fast), str(p.unverified), str(p.refused),
             str(p.drills_caught), str(p.drills_missed)) for p in review.approvers]


def headline(review: Review) -> list[str]:
    from selfheal.review import days

    c, h = review.counts, review.history
    lines = [f"review of the last {review.since}: {c.incidents} incident(s), {c.drills} drill(s); "
             f"still open, not counted: {c.open_incidents} incident(s), {c.open_drills} drill(s)"]
    lines.append(f"history reaches back {days(h.retention_days)} (the namespace's retention)" if h.retention_days
                 else "the namespace keeps history forever")
    return lines + [f"warning: {w}" for w in review.warnings]


def shadow_lines(review: Review) -> list[str]:
    lines = []
    for s in review.shadow:
        lines.append(f"{s.entry}: {'promote' if s.verdict == 'promote' else 'keep in shadow'}")
        lines.extend(f"  {e}" for e in s.evidence)
        lines.extend(f"  same alert: {a.incident} {a.entry or 'no entry'} {a.outcome or 'open'}"
                     + (f" ({'; '.join(a.people)})" if a.people else "") for a in s.same_alerts[-SAME_ALERTS_SHOWN:])
        if len(s.same_alerts) > SAME_ALERTS_SHOWN:
            lines.append(f"  and {len(s.same_alerts) - SAME_ALERTS_SHOWN} earlier one(s): --json lists them all")
    return lines


def drill_line(review: Review) -> str:
    d = review.drills
    return f"drills: {d.drills} (caught {d.caught}, missed {d.missed}, unanswered {d.unanswered}); {d.open} open"


def recommendation_lines(review: Review) -> list[str]:
    return [r.text for r in review.recommendations] or ["none: nothing in this window crosses a threshold"]


def as_text(review: Review, out: Console) -> None:
    def table(title: str, columns, rows) -> None:
        t = Table(title=title, title_justify="left")
        for column in columns:
            t.add_column(column, overflow="fold")
        for row in rows:
            t.add_row(*row)
        out.print(t)

    out.print("\n".join(headline(review)), markup=False, highlight=False, soft_wrap=True)
    table("Whitelist entries", ENTRY_COLUMNS, entry_rows(review))
    table("Approvers", APPROVER_COLUMNS, approver_rows(review))
    out.print("\n".join(["Shadow entries:", *(f"  {line}" for line in shadow_lines(review) or ["none in this window"]),
                         drill_line(review), "", "Recommendations:", *(f"  - {r}" for r in recommendation_lines(review))]),
              markup=False, highlight=False, soft_wrap=True)


def as_markdown(review: Review) -> str:
    def table(columns, rows) -> list[str]:
        cell = lambda v: v.replace("|", "\\|")  # noqa: E731
        return [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}",
                *(f"| {' | '.join(map(cell, row))} |" for row in rows)]

    out = [f"## selfheal review, last {review.since}", "", *(f"- {line}" for line in headline(review)),
           "", "### Whitelist entries", "", *table(ENTRY_COLUMNS, entry_rows(review)),
           "", "### Approvers", "", *table(APPROVER_COLUMNS, approver_rows(review)),
           "", "### Shadow entries", ""]
    nested = lambda line: f"  - {line.strip()}" if line.startswith("  ") else f"- {line}"  # noqa: E731
    out += [nested(line) for line in shadow_lines(review)] or ["- none in this window"]
    out += ["", "### Drills", "", f"- {drill_line(review)}", "", "### Recommendations", ""]
    out += [f"- {r}" for r in recommendation_lines(review)]
    return "\n".join(out) + "\n"


def register(app: typer.Typer, out: Console, err: Console) -> None:
    @app.command("review")
    def review(
        since: str = typer.Option("30d", "--since", help="incidents and drills that started within this long (30d, 12h, 90m)"),
        limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=1, help="read at most this many, newest first"),
        as_json: bool = typer.Option(False, "--json", help="one JSON document, for machines"),
        markdown: bool = typer.Option(False, "--markdown", help="Markdown, for a ticket"),
        whitelist: Path = typer.Option(Path("deploy/demo/whitelist.yaml"), "--whitelist", envvar="SELFHEAL_WHITELIST",
                                       help="the current whitelist: its entries, used or not"),
        address: str = AddressOption,
        namespace: str = NamespaceOption,
    ) -> None:
        """Per entry, per approver, shadow entries and drills over a window, and what to change."""
        from selfheal.whitelist import WhitelistError, load_whitelist

        if as_json and markdown:
            err.print("review: --json and --markdown are exclusive", markup=False)
            raise typer.Exit(2)
        try:
            window = parse_since(since)
        except ValueError as exc:
            err.print(f"review: --since {since}: {exc}", markup=False)
            raise typer.Exit(2) from None
        try:
            current = load_whitelist(whitelist).whitelist
        except WhitelistError as exc:
            for line in exc.lines():
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            err.print("review: the whitelist was refused (--whitelist, SELFHEAL_WHITELIST)", markup=False)
            raise typer.Exit(2) from None

        async def run() -> Review:
            return await review_with(await connect_temporal(address, namespace), window, limit, current)

        result = run_or_exit(run(), err, "review")
        if as_json:
            print(result.model_dump_json(indent=2))
        elif markdown:
            print(as_markdown(result), end="")
        else:
            as_text(result, out)
