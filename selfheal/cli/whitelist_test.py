"""``selfheal whitelist test CASES.yaml [--whitelist PATH] [--rules PATH] [--json] [--junit PATH]``:
the cases a team writes next to its whitelist (``selfheal.review.cases``), run through the
code an incident runs; a diff per failed expectation, as ``promtool test rules`` prints."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from xml.etree import ElementTree

import typer


def _shown(value) -> str:
    return json.dumps(value, sort_keys=True)


def junit(path: Path, cases_path: Path, results) -> None:
    """JUnit XML, which every CI system reads: one testcase per case, a failure per unmet one."""
    suite = ElementTree.Element("testsuite", name=str(cases_path), tests=str(len(results)),
                                failures=str(sum(not r.ok for r in results)))
    for r in results:
        case = ElementTree.SubElement(suite, "testcase", classname="selfheal.whitelist", name=r.name)
        if not r.ok:
            failure = ElementTree.SubElement(case, "failure", message=", ".join(f for f, _, _ in r.failures))
            failure.text = "\n".join(f"{f}: expected {_shown(e)}, got {_shown(g)}" for f, e, g in r.failures)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def register(whitelist_app: typer.Typer, out, err) -> None:
    @whitelist_app.command("test")
    def whitelist_test(
        cases: Path = typer.Argument(..., help="the cases file (YAML)"),
        whitelist: Path = typer.Option(None, "--whitelist", help="test this whitelist instead of the one the file names"),
        rules: Path = typer.Option(None, "--rules", help="these diagnosis rules instead of the ones the file names"),
        as_json: bool = typer.Option(False, "--json", help="every case's result as JSON"),
        junit_path: Path = typer.Option(None, "--junit", help="also write JUnit XML here, for CI"),
    ) -> None:
        """Run the cases: alerts (with the governor's state, the world and the logs they
        would meet) and what must follow: the matched entries, the proposal, the decision and
        its rule, the tier, the approvals and approvers, the exact target and parameters.
        Exits 1 when any expectation fails, 2 when a file is invalid."""
        from selfheal.review.cases import load_cases, run_file
        from selfheal.whitelist import WhitelistError
        from selfheal.whitelist.reviewed import ReviewedFileError

        try:
            loaded = load_cases(cases)
            wl_path, rules_path, results = asyncio.run(run_file(loaded, cases.parent, whitelist, rules))
        except (WhitelistError, ReviewedFileError) as exc:
            for line in exc.lines():
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            err.print(f"{len(exc.problems)} problem(s); no case was run.", markup=False)
            raise typer.Exit(2) from None
        failed = [r for r in results if not r.ok]
        if junit_path is not None:
            junit(junit_path, cases, results)
        if as_json:
            out.print_json(json.dumps({"cases": str(cases), "whitelist": str(wl_path), "rules": str(rules_path or ""),
                                       "results": [{"name": r.name, "ok": r.ok, "got": r.got,
                                                    "failures": [{"field": f, "expected": e, "got": g}
                                                                 for f, e, g in r.failures]} for r in results]}))
        else:
            out.print(f"Unit Testing: {cases} (whitelist {wl_path}" + (f", rules {rules_path})" if rules_path else ")"),
                      markup=False, highlight=False)
            for r in failed:
                out.print(f"  FAILED: {r.name}", markup=False, highlight=False)
                for field, expected, got in r.failures:
                    out.print(f"    {field}:\n      exp: {_shown(expected)}\n      got: {_shown(got)}",
                              markup=False, highlight=False, soft_wrap=True)
            out.print(f"{len(results)} case(s): {len(results) - len(failed)} passed, {len(failed)} failed"
                      + ("" if failed else " — SUCCESS"), markup=False, highlight=False)
        if failed:
            raise typer.Exit(1)
