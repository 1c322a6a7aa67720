"""The arrows between selfheal's rooms point one way (docs/reference/code-layout.md).

Read from the source (every import, also those inside functions), not from what happens
to be loaded:

- ``whitelist/`` (the trust boundary) imports nothing else of selfheal;
- the contract (``selfheal/contract/``) imports only the trust boundary;
- ``workflows/`` and ``activities/`` import the contract, never each other, and nothing
  that sits on top (the CLI, the ingress, the dev stack, the worker process, or any module
  that itself imports workflows or activities);
- no module imports another module's private (``_name``) name;
- no two modules import each other, however indirectly;
- a module past about 300 lines says at its top why it is one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {"selfheal": ROOT / "selfheal", "selfheal.whitelist": ROOT / "whitelist",
         "selfheal.workflows": ROOT / "workflows", "selfheal.activities": ROOT / "activities"}
TOP = ("selfheal.cli", "selfheal.ingress", "selfheal.dev", "selfheal.worker", "selfheal.dev.aws_sim")
BELOW = ("selfheal.whitelist", "selfheal.contract", "selfheal.workflows", "selfheal.activities")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in ROOMS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def within(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def imports(name: str) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every absolute import of a selfheal module."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("selfheal"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, None, node.lineno) if submodule in MODULES else (node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("selfheal")]
    return found


GRAPH = {name: {target for target, _, _ in imports(name) if target in MODULES} for name in MODULES}


def shown(name: str) -> str:
    path = MODULES[name]
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def where(name: str, target: str) -> str:
    lines = sorted({line for t, _, line in imports(name) if t == target})
    return f"{shown(name)}:{lines[0]}: {name} imports {target}"


def test_the_layout_is_what_the_readme_describes():
    assert {"selfheal.contract", "selfheal.cli", "selfheal.ingress", "selfheal.whitelist"} <= set(MODULES)
    assert len(MODULES) > 90  # every room was read


def test_the_trust_boundary_imports_nothing_else_of_selfheal():
    wrong = [where(n, t) for n in MODULES if within(n, "selfheal.whitelist")
             for t in GRAPH[n] if not within(t, "selfheal.whitelist")]
    assert wrong == []


def test_the_contract_imports_only_the_trust_boundary():
    wrong = [where(n, t) for n in MODULES if within(n, "selfheal.contract")
             for t in GRAPH[n] if not (within(t, "selfheal.contract") or within(t, "selfheal.whitelist"))]
    assert wrong == []


def test_workflows_and_activities_never_import_each_other():
    wrong = [where(n, t) for n in MODULES for a, b in (("selfheal.workflows", "selfheal.activities"),
                                                      ("selfheal.activities", "selfheal.workflows"))
             if within(n, a) for t in GRAPH[n] if within(t, b)]
    assert wrong == []


def test_nothing_below_imports_what_sits_on_top():
    # A shared module (redaction, signing, search attributes) is below too, so long as it
    # imports neither workflows nor activities nor anything on top.
    above = {n for n in MODULES if any(within(n, t) for t in TOP)}
    above |= {n for n in MODULES if not any(within(n, b) for b in BELOW)
              and any(within(t, "selfheal.workflows") or within(t, "selfheal.activities") for t in GRAPH[n])}
    wrong = [where(n, t) for n in MODULES if any(within(n, b) for b in BELOW) for t in GRAPH[n] if t in above]
    assert wrong == []


def test_no_module_imports_another_modules_private_names():
    wrong = [f"{shown(n)}:{line}: {n} imports {module}.{attr}"
             for n in MODULES for module, attr, line in imports(n)
             if attr and attr.startswith("_") and not within(n, module)]
    assert wrong == []


def test_there_are_no_import_cycles():
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # A package's __init__ that re-exports its own modules is no cycle worth the name.
    cycles = [c for c in cycles if not all(within(m, c[0]) for m in c)]
    assert cycles == []


def test_a_module_over_300_lines_says_why_at_its_top():
    # ~300 lines: a little over is a module, not a room; past 310 its docstring says why.
    long = [f"{shown(n)}: {lines} lines" for n, path in MODULES.items()
            if (lines := len(path.read_text().splitlines())) > 310
            and "lines on purpose" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert long == []


def test_a_violation_is_reported(tmp_path, monkeypatch):
    """The checks can fail: an activity importing a workflow is named, with file and line."""
    bad = tmp_path / "bad.py"
    bad.write_text("from selfheal.workflows.incident import IncidentWorkflow\n")
    monkeypatch.setitem(MODULES, "selfheal.activities.bad", bad)
    monkeypatch.setitem(GRAPH, "selfheal.activities.bad", {"selfheal.workflows.incident"})
    try:
        test_workflows_and_activities_never_import_each_other()
    except AssertionError as exc:
        assert "bad.py:1: selfheal.activities.bad imports selfheal.workflows.incident" in str(exc)
    else:
        raise AssertionError("an activity importing a workflow was not reported")


@pytest.mark.slow  # starts a Python process: a fresh interpreter's modules are the measure
def test_the_command_line_imports_what_a_command_needs_when_it_runs():
    """``selfheal --help`` and the whitelist commands run in a person's terminal and in CI
    scripts: importing the CLI must not import the Temporal client or the contract's models
    (0.55 s of 0.63 before they moved into the commands that use them)."""
    import subprocess
    import sys

    heavy = ("temporalio", "selfheal.contract", "selfheal.whitelist", "selfheal.settings", "selfheal.search")
    probe = ("import sys, selfheal.cli; "
             f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == "", imported.stdout
