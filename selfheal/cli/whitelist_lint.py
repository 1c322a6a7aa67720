"""``selfheal whitelist lint PATH [--rules PATH] [--hosts FILE] [--strict]``: what a reviewer
wants pointed out in a whitelist that passes ``check`` (``selfheal.review.lint``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(whitelist_app: typer.Typer, out, err) -> None:
    @whitelist_app.command("lint")
    def whitelist_lint(
        path: Path = typer.Argument(..., help="the whitelist YAML file"),
        rules: Path = typer.Option(None, "--rules", help="the diagnosis rules: also check what they propose"),
        hosts: Path = typer.Option(None, "--hosts", help="a host inventory, one per line: check the host globs against it"),
        strict: bool = typer.Option(False, "--strict", help="exit 1 when anything is found (for CI)"),
        as_json: bool = typer.Option(False, "--json", help="the findings as JSON"),
    ) -> None:
        """Point out what passes `check` but may not mean what its authors think: overlapping
        entries, entries nothing proposes, unused tiers, idle people, host globs against an
        inventory, a lone AWS account or region, verification by the action's own check only.
        Each as PATH:LINE: rule: reason. Exits 0 (1 with --strict when anything is found),
        2 when a file is invalid. Silence one, with the reason, in the file:
        `# lint: allow RULE (why)` on its line or the line above."""
        from selfheal.activities.diagnose import load_rules
        from selfheal.review.lint import lint, read_hosts
        from selfheal.whitelist import WhitelistError, load_whitelist
        from selfheal.whitelist.reviewed import ReviewedFileError

        try:
            loaded = load_whitelist(path)
            loaded_rules = load_rules(rules) if rules else None
        except (WhitelistError, ReviewedFileError) as exc:
            for line in exc.lines():
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            err.print(f"{len(exc.problems)} problem(s); nothing linted.", markup=False)
            raise typer.Exit(2) from None
        try:
            inventory = read_hosts(hosts) if hosts else None
        except OSError as exc:
            err.print(f"cannot read --hosts {hosts}: {exc.strerror}", markup=False)
            raise typer.Exit(2) from None
        findings = lint(loaded.whitelist, str(path), path.read_bytes(), loaded_rules, str(rules or ""),
                        rules.read_bytes() if rules else b"", inventory)
        if as_json:
            out.print_json(json.dumps({"path": str(path), "sha256": loaded.sha256,
                                       "findings": [f.__dict__ for f in findings]}))
        else:
            for finding in findings:
                out.print(str(finding), markup=False, highlight=False, soft_wrap=True)
            out.print(f"{len(findings)} finding(s) in {path}" + (f" and {rules}" if rules else ""), markup=False)
        if strict and findings:
            raise typer.Exit(1)
