"""Write reference/cli.md from the CLI itself: every command, its arguments and options.

    .venv/bin/python docs/cli_reference.py

tests/test_docs.py fails when the page differs from what this prints, so the reference
never drifts from `selfheal --help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

PAGE = Path(__file__).resolve().parent / "reference" / "cli.md"

INTRO = """\
# Command line

Every `selfheal` command, its arguments and its options, generated from the CLI itself
(`docs/cli_reference.py`; `selfheal COMMAND --help` prints the same). How the commands
are used: [Work incidents from a terminal](../how-to/work-incidents.md), [Write a
whitelist](../how-to/write-a-whitelist.md), [Least
privilege](../how-to/least-privilege.md), [Settings](settings.md) (the worker) and
[Reviewing approvals](../operations/review.md).

The commands that reach Temporal honour `TEMPORAL_ADDRESS` and `TEMPORAL_NAMESPACE`, and
the profiles of the Temporal config file (see [Connect to a Temporal cluster or Temporal
Cloud](../how-to/temporal-cluster.md)).

An expected failure (Temporal unreachable, an unknown incident, a query no worker answers)
is one or two lines and a non-zero exit. `selfheal --debug COMMAND` (or `SELFHEAL_DEBUG=1`)
shows its traceback too, without local variables, which could hold tokens or keys.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# typer carries its own copy of click: parameters are told apart by their type name.
def _is(param, kind: str) -> bool:
    return getattr(param, "param_type_name", None) == kind


def _default(param) -> str:
    if param.required:
        return "required"
    default, flag = param.default, getattr(param, "is_flag", False)
    if flag and param.secondary_opts:
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    if default is None or default == "" or (flag and default is False):
        return ""
    return f"`{default}`"


def _env(param) -> str:
    names = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar] if param.envvar else []
    return ", ".join(f"`{n}`" for n in names)


def _command(lines: list[str], command, path: tuple[str, ...]) -> None:
    name = " ".join(("selfheal", *path))
    groups = getattr(command, "commands", None)
    if path:
        lines += ["", f"## {name}" if len(path) == 1 else f"### {name}", ""]
        if command.help:
            lines += [" ".join(command.help.split()), ""]
        ctx = command.context_class(command, info_name=name)
        lines += ["```text", f"{name} {' '.join(command.collect_usage_pieces(ctx))}".rstrip(), "```"]
        arguments = [p for p in command.params if _is(p, "argument")]
        options = [p for p in command.params if _is(p, "option") and not p.hidden]
        if arguments:
            lines += ["", "| argument | meaning |", "|---|---|"]
            lines += [f"| `{p.name.upper()}` | {_cell(getattr(p, 'help', None) or '')} |" for p in arguments]
        if options:
            lines += ["", "| option | environment | default | meaning |", "|---|---|---|---|"]
            for p in options:
                names = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
                lines.append(f"| {names} | {_env(p)} | {_default(p)} | {_cell(p.help or '')} |")
    for sub_name, sub in (groups or {}).items():
        _command(lines, sub, (*path, sub_name))


def render() -> str:
    from selfheal.cli import app

    lines = [INTRO.rstrip("\n")]
    _command(lines, typer.main.get_command(app), ())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    PAGE.write_text(render())
    sys.stdout.write(f"wrote {PAGE}\n")
