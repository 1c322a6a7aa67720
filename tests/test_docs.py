"""The documentation site (docs/) is held to the code (issue 24).

- it builds with Sphinx, warnings as errors: a broken link between pages, a missing
  ``#anchor`` or a page outside the table of contents fails the build;
- every link from README.md into docs/ names a page, and an anchor, that exist;
- every ``selfheal`` command shown in a shell or console block of the docs or the README
  is parsed against the CLI (the command exists and has every option the line uses); the
  ones that need no server, cluster or AWS are run, and exit as the docs say, printing
  what the docs show when they show it; ``--help`` of every command shown is run;
- the CLI reference page is what docs/cli_reference.py generates from the CLI today.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.test_suggested_options import COMMANDS, command_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

SHELL_BLOCKS = {"", "console", "sh", "shell", "bash", "shell-session"}
# A command word that runs selfheal: the installed script, the venv's, or an absolute path to it.
SELFHEAL = re.compile(r"^(?:selfheal|\.venv/bin/selfheal|/\S*/bin/selfheal)$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Commands that read only local files and reach nothing: the docs' lines for them are run.
RUNNABLE = {("whitelist", name) for name in ("check", "explain", "diff", "lint", "test", "iam-policy", "sudoers",
                                             "ssm-documents")}


def doc_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def markdown_files() -> list[Path]:
    return [README, *doc_pages()]


def where(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------------------ the build


def toctree_entries() -> list[str]:
    """Every document the toctrees list, as a path under docs/ without its suffix."""
    entries = []
    for page in doc_pages():
        for token in MarkdownIt("commonmark").parse(page.read_text()):
            if token.type == "fence" and token.info.strip() == "{toctree}":
                for line in token.content.splitlines():
                    line = line.strip()
                    if line and not line.startswith(":"):
                        entries.append(str((page.parent / line).relative_to(DOCS)))
    return entries


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.mark.slow  # starts processes: sphinx-build, the CLI
def test_the_docs_build_with_warnings_as_errors_and_write_every_page(built: Path):
    entries = toctree_entries()
    assert len(entries) >= 30
    missing = [entry for entry in entries if not (built / f"{entry}.html").is_file()]
    assert missing == []
    assert (built / "index.html").is_file()


def test_every_page_is_in_a_toctree():
    listed = set(toctree_entries()) | {"index"}
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in doc_pages()}
    assert sorted(pages - listed) == []


@pytest.mark.slow  # starts processes: sphinx-build, the CLI
def test_the_build_fails_on_a_broken_link(tmp_path: Path):
    """The check has teeth: a link to a missing anchor is a warning, and -W makes it fatal."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text((DOCS / "conf.py").read_text())
    (src / "index.md").write_text("# Home\n\n## A heading\n\n[ok](#a-heading) [broken](#no-such-heading)\n")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "no-such-heading" in result.stderr
    assert "#a-heading" not in result.stderr


# ------------------------------------------------------------------------------ links


@cache
def anchors(page: Path) -> frozenset[str]:
    """The anchors MyST gives the page's headings (myst_heading_anchors: GitHub-style slugs)."""
    from myst_parser.mdit_to_docutils.base import unique_slug
    from myst_parser.slugs import github_slugify

    slugs: set[str] = set()
    tokens = MarkdownIt("commonmark").parse(page.read_text())
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            title = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
            slugs.add(unique_slug(github_slugify(title), slugs))
    return frozenset(slugs)


def readme_links() -> list[str]:
    links = []
    for token in MarkdownIt("commonmark").parse(README.read_text()):
        for child in token.children or []:
            if child.type == "link_open":
                links.append(child.attrs["href"])
    return links


def test_readme_links_into_the_docs_resolve():
    into_docs = [link for link in readme_links() if link.startswith("docs/")]
    assert len(into_docs) >= 20
    broken = []
    for link in into_docs:
        file, _, anchor = link.partition("#")
        target = ROOT / file
        if not target.is_file():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{link}: no such anchor in {file}")
    assert broken == []


def test_the_readme_links_nothing_local_outside_the_docs():
    local = [link for link in readme_links() if "://" not in link and not link.startswith(("docs/", "#", "mailto:"))]
    assert local == []


def test_the_readme_stays_short():
    assert len(README.read_text().splitlines()) <= 250


# ------------------------------------------------------------------------------ commands


@dataclass
class Shown:
    file: Path
    line: int
    text: str  # the command as shown, continuation lines joined
    exit: int  # what the docs say it exits with (a "# exit N" comment), else 0
    output: list[str] | None  # the output the docs show after a "$ " line, if any

    def __str__(self) -> str:
        return f"{where(self.file)}:{self.line}: {self.text}"


def _logical_lines(content: str) -> list[tuple[int, str]]:
    lines, pending, start = [], "", 0
    for n, raw in enumerate(content.splitlines()):
        if not pending:
            start = n
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def _words(text: str) -> list[str] | None:
    """The words after the selfheal executable of the line's first selfheal command (a line may
    chain commands with && ; |), or None if it runs no selfheal."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # prose in a console block (an apostrophe): not a command
        return None
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token and set(token) <= set("&|;<>()"):
            while segment and ASSIGNMENT.match(segment[0]):
                segment = segment[1:]
            if segment and SELFHEAL.match(segment[0]):
                return segment[1:]
            segment = []
        else:
            segment.append(token)
    return None


def shown_commands() -> list[Shown]:
    found = []
    for file in markdown_files():
        for token in MarkdownIt("commonmark").parse(file.read_text()):
            if token.type != "fence" or token.info.strip() not in SHELL_BLOCKS:
                continue
            first = token.map[0] + 2  # the line after the fence, 1-based
            lines = _logical_lines(token.content)
            prompted = any(text.lstrip().startswith("$ ") for _, text in lines)
            for i, (n, text) in enumerate(lines):
                stripped = text.strip()
                is_prompt = stripped.startswith("$ ")
                command = stripped[2:] if is_prompt else stripped
                if _words(command) is None:
                    continue
                # In a block with prompts, an unprompted line is output; it counts only when it is a
                # command line printed for people to run (an absolute path to selfheal).
                if prompted and not is_prompt and not command.startswith("/"):
                    continue
                output = None
                if is_prompt:
                    rest = [t for _, t in lines[i + 1:]]
                    end = next((k for k, t in enumerate(rest) if t.lstrip().startswith("$ ")), len(rest))
                    output = rest[:end] or None
                said = re.search(r"#\s*exit (\d+)", command)
                found.append(Shown(file, first + n, command, int(said.group(1)) if said else 0, output))
    return found


SHOWN = shown_commands()


def test_the_docs_show_commands():
    assert len(SHOWN) >= 40
    assert {where(s.file) for s in SHOWN} >= {"README.md", "docs/how-to/write-a-whitelist.md", "docs/how-to/work-incidents.md"}


def _parse_words(shown: Shown) -> list[str]:
    # "[--runners runners.yaml]" marks optional words: they must exist all the same.
    return [w.strip("[]") for w in _words(shown.text) or [] if w.strip("[]")]


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_every_command_shown_parses_against_the_cli(shown: Shown):
    words = _parse_words(shown)
    path = command_of([w for w in words if not w.startswith("-")][:3]) if words else ()
    assert path is not None and path in COMMANDS, f"no such command: selfheal {' '.join(words[:2])}"
    assert words[: len(path)] == list(path), f"options before the command: {words}"
    if getattr(_command(path), "commands", None) and "--help" not in words:
        pytest.fail(f"selfheal {' '.join(path)} is a group: name one of its commands")
    # A lone "-" is a value (standard input, as for --confirm), not an option.
    wrong = [w.split("=")[0] for w in words
             if w.startswith("-") and w != "-" and w.split("=")[0] not in COMMANDS[path] | {"--help"}]
    assert wrong == [], f"selfheal {' '.join(path)} has no {', '.join(wrong)}"


def _command(path: tuple[str, ...]):
    import typer.main

    from selfheal.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "SELFHEAL_"))}
    return subprocess.run([sys.executable, "-m", "selfheal.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _runnable(shown: Shown) -> list[str] | None:
    """The words to run, if the command reads only files that are in the repository."""
    text = re.sub(r"\[[^\]]*\]", "", shown.text)  # optional parts are left out when run
    words = _words(text)
    if not words or command_of(words[:2]) not in RUNNABLE:
        return None
    if re.match(r"^[A-Z_][A-Z0-9_]*=", shown.text.strip()):
        return None  # it names settings of its own
    operands = [w for w in words[2:] if not w.startswith("-")]
    if any(("/" in w or w.endswith((".yaml", ".yml"))) and not (ROOT / w).is_file() for w in operands):
        return None  # a file of the reader's (bad.yaml, /tmp/old.yaml, ssm/)
    if "--out" in words or "--junit" in words:
        return None  # writes files
    return words


RUN = [s for s in SHOWN if _runnable(s) is not None]


def test_some_commands_shown_are_run():
    assert len(RUN) >= 3
    assert {tuple(_runnable(s)[:2]) for s in RUN} >= {("whitelist", "check"), ("whitelist", "explain")}


@pytest.mark.slow  # starts processes: sphinx-build, the CLI
@pytest.mark.parametrize("shown", RUN, ids=str)
def test_the_commands_that_need_no_server_run_as_shown(shown: Shown):
    result = _run(_runnable(shown))
    assert result.returncode == shown.exit, f"{shown}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    if shown.output is not None:
        printed = (result.stdout + result.stderr).rstrip("\n").splitlines()
        assert [line.rstrip() for line in printed] == [line.rstrip() for line in shown.output]


HELP_PATHS = sorted({p for s in SHOWN if (p := command_of([w for w in _parse_words(s) if not w.startswith("-")][:3]))})


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "selfheal")
def test_help_of_every_command_shown(path: tuple[str, ...]):
    # In this process (the same app object `selfheal` runs): a process per command cost the
    # suite 18 s, and the commands above run the real entry point.
    from typer.testing import CliRunner

    from selfheal.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], prog_name="selfheal")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


# ------------------------------------------------------------------------------ the CLI reference


def test_the_cli_reference_is_generated_from_the_cli():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "reference" / "cli.md").read_text() == module.render(), (
        "docs/reference/cli.md is out of date: run .venv/bin/python docs/cli_reference.py")
