"""``selfheal whitelist check`` and ``explain``: what a whitelist allows, for the person
who reviews it. (``diff``, ``lint`` and ``test`` have modules of their own.)"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table


def load_or_exit(path: Path, err):
    from selfheal.whitelist import WhitelistError, load_whitelist

    try:
        return load_whitelist(path)
    except WhitelistError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        err.print(f"{len(exc.problems)} problem(s); the whitelist was refused.", markup=False, highlight=False)
        raise typer.Exit(2) from None  # 2: the input is wrong (1 is whitelist diff's "widens")


def register(whitelist_app: typer.Typer, out, err) -> None:
    @whitelist_app.command("check")
    def whitelist_check(path: Path = typer.Argument(..., help="the whitelist YAML file")) -> None:
        """Validate a whitelist; print its entries, or every problem as PATH:LINE: field: message."""
        from selfheal.whitelist.durations import format_duration
        from selfheal.whitelist.explain import drills_words, needs_words, paging_brief, tier_words
        from selfheal.whitelist.policy import target_of

        loaded = load_or_exit(path, err)
        wl = loaded.whitelist
        table = Table(title=f"{path} — {len(wl.entries)} entries, sha256 {loaded.sha256[:12]}")
        for column in ("id", "kind", "mode", "target", "blast radius", "needs", "alone on / failures"):
            table.add_column(column, overflow="fold")
        for entry in wl.entries:
            target = ", ".join(f"{k}={v}" for k, v in target_of(entry).items())
            guard = (f"{entry.autonomy.max_targets} per {format_duration(entry.autonomy.window)}, then "
                     f"{wl.escalation_tier(entry.id)}; breaker at {entry.breaker.failures} in "
                     f"{format_duration(entry.breaker.window)}")
            mode = "SHADOW (never runs)" if entry.mode == "shadow" else "active"
            table.add_row(entry.id, entry.kind, mode, target, entry.blast_radius, needs_words(wl, entry), guard)
        out.print(table)
        tiers = Table(title="tiers: who must agree, and how; where their incidents page (when the worker pages PagerDuty)")
        for column in ("tier", "approvals", "how an approval counts", "pages"):
            tiers.add_column(column, overflow="fold")
        for name, tier in wl.tiers.items():
            tiers.add_row(name, str(tier.approvals), tier_words(tier) if tier.approvals else "runs automatically",
                          paging_brief(wl.paging("", name)))
        out.print(tiers)
        own = [f"{e.id} (${e.paging.routing_key_env})" for e in wl.entries if e.paging and e.mode != "shadow"]
        if own:
            out.print(f"Entries that page a service of their own: {', '.join(own)}.", markup=False, highlight=False)
        out.print(f"Drills: {drills_words(wl)}.", markup=False, highlight=False)


    @whitelist_app.command("explain")
    def whitelist_explain(
        path: Path = typer.Argument(..., help="the whitelist YAML file"),
        entry_id: str = typer.Argument(..., help="the entry's id"),
    ) -> None:
        """Say in plain words what one entry allows, on what, within which bounds, and who must approve."""
        from selfheal.whitelist.explain import explain

        wl = load_or_exit(path, err).whitelist
        if wl.entry(entry_id) is None:
            err.print(f"{path}: no entry with id {entry_id!r}; entries: {', '.join(e.id for e in wl.entries)}", markup=False)
            raise typer.Exit(2)
        out.print(explain(wl, entry_id), markup=False, highlight=False, soft_wrap=True)
