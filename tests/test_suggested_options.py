"""No message suggests an option that does not exist (issue 24).

Every string in the product code is read: an option it suggests ("pass --key FILE", "or
send --unsigned") must be an option of some ``selfheal`` command, and a ``selfheal CMD
... --option`` it prints or documents must name an option of that very command.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import typer.main

from selfheal.cli import app

ROOT = Path(__file__).resolve().parents[1]
SUGGESTION = re.compile(r"\b(?:pass|send|use|add|give|with|set|try|rerun|or|leave out)\s+(--[a-z][a-z0-9-]+)")
COMMAND_LINE = re.compile(r"\bselfheal((?: [a-z][a-z-]+)+)((?: +[^\n`]*?)?)(?:$|\n|``|`)")


def commands() -> dict[tuple[str, ...], set[str]]:
    """Every command path of the CLI and its options."""
    found: dict[tuple[str, ...], set[str]] = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        found[path] = {name for p in command.params for name in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = commands()
EVERY_OPTION = set().union(*COMMANDS.values())


def strings() -> list[tuple[str, int, str]]:
    found = []
    for folder in ("selfheal", "workflows", "activities", "whitelist"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.append((str(path.relative_to(ROOT)), node.lineno, node.value))
    return found


def command_of(words: list[str]) -> tuple[str, ...] | None:
    """The longest command path the words begin with."""
    for n in range(len(words), 0, -1):
        if tuple(words[:n]) in COMMANDS:
            return tuple(words[:n])
    return None


def test_every_suggested_option_exists():
    wrong = [f"{file}:{line}: {m.group(0)!r}" for file, line, text in strings()
             for m in SUGGESTION.finditer(text) if m.group(1) not in EVERY_OPTION]
    assert wrong == []


def test_every_printed_command_line_uses_its_own_options():
    wrong, seen = [], 0
    for file, line, text in strings():
        for m in COMMAND_LINE.finditer(text):
            path = command_of(m.group(1).split())
            if path is None:
                continue
            seen += 1
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", m.group(2)):
                if option not in COMMANDS[path]:
                    wrong.append(f"{file}:{line}: selfheal {' '.join(path)} has no {option}")
    assert wrong == []
    assert seen > 10  # the lines were found: dev's printed commands, the docstrings


def test_the_check_sees_a_wrong_suggestion():
    assert "--unsigned" in COMMANDS[("approve",)] and "--unsigned" not in COMMANDS[("resume",)]
    assert SUGGESTION.search("or send --nosuch").group(1) not in EVERY_OPTION


def test_a_command_without_a_key_suggests_only_what_it_can_do(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_ed25519 either
    runner = CliRunner()
    resume = runner.invoke(app, ["resume", "--as", "alice"])
    pause = runner.invoke(app, ["pause", "--as", "alice", "--reason", "r", "--sign"])
    assert resume.exit_code == 1 and "no SSH key to sign with" in resume.output
    assert "--unsigned" not in resume.output and "--sign" not in resume.output
    assert pause.exit_code == 1 and "leave out --sign" in pause.output
