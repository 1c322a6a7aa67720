"""``selfheal whitelist diff OLD NEW``: a whitelist change by the authority it adds or removes."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(whitelist_app: typer.Typer, out, err) -> None:
    @whitelist_app.command("diff")
    def whitelist_diff(
        old: Path = typer.Argument(..., help="the whitelist before the change (e.g. from the base branch)"),
        new: Path = typer.Argument(..., help="the whitelist after the change"),
        as_json: bool = typer.Option(False, "--json", help="the changes as JSON"),
        markdown: bool = typer.Option(False, "--markdown", help="a Markdown table, for a pull-request comment"),
    ) -> None:
        """Say what a whitelist change adds or removes, each line marked as widening or narrowing
        authority. Exits 1 when anything widens (so CI can ask for a second reviewer), 0 when
        nothing does, 2 when either file is not a valid whitelist."""
        from selfheal.whitelist import WhitelistError, load_whitelist
        from selfheal.whitelist.diff import diff, widens

        loaded = []
        for path in (old, new):
            try:
                loaded.append(load_whitelist(path))
            except WhitelistError as exc:
                for line in exc.lines():
                    err.print(line, markup=False, highlight=False, soft_wrap=True)
                err.print(f"{path}: {len(exc.problems)} problem(s); not a valid whitelist, nothing compared.", markup=False)
                raise typer.Exit(2) from None
        changes = diff(loaded[0].whitelist, loaded[1].whitelist)
        counts = {d: sum(c.direction == d for c in changes) for d in ("widens", "narrows", "neutral")}
        summary = (f"{counts['widens']} widening, {counts['narrows']} narrowing, {counts['neutral']} neutral "
                   f"change(s) from {old} (sha256 {loaded[0].sha256[:12]}) to {new} (sha256 {loaded[1].sha256[:12]})")
        if as_json:
            doc = {"old": {"path": str(old), "sha256": loaded[0].sha256}, "new": {"path": str(new), "sha256": loaded[1].sha256},
                   "widens": widens(changes), "counts": counts,
                   "changes": [{"direction": c.direction, "path": c.path, "words": c.words} for c in changes]}
            print(json.dumps(doc, indent=2))
        elif markdown:
            lines = [f"**Whitelist change**: {summary}", "", "| | where | what |", "|---|---|---|"]
            lines += [f"| {c.direction} | `{c.path}` | {c.words.replace('|', '/')} |" for c in changes]
            print("\n".join(lines))
        else:
            label = {"widens": "WIDENS ", "narrows": "narrows", "neutral": "neutral"}
            for c in changes:
                out.print(f"{label[c.direction]}  {c.path}: {c.words}", markup=False, highlight=False, soft_wrap=True)
            out.print(summary + (": authority widens; ask for a second reviewer" if widens(changes) else ""),
                      markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1 if widens(changes) else 0)
