"""Load a whitelist file, or refuse it with every problem as ``PATH:LINE: field.path: message``.

The YAML is composed into nodes first, so each problem pydantic reports can be traced
back to the line of the offending key (or, for a missing key, the line of the mapping
that should hold it). Duplicate YAML keys, which PyYAML would silently collapse, are
refused here too: a reviewer must see exactly what runs.

The content hash is the SHA-256 of the file's bytes. Any edit, a comment included,
changes it; that is deliberate, so ``sha256sum whitelist.yaml`` on the reviewed commit
names the same file an incident's history records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .models import KINDS, Whitelist, aws_problems, consistency_problems, escalation_problems

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str


class WhitelistError(Exception):
    """The file was refused; ``problems`` lists every reason, each with its line."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.line, p.field))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}:{p.line}: {p.field}: {p.message}" for p in self.problems]


@dataclass(frozen=True)
class LoadedWhitelist:
    whitelist: Whitelist
    path: str
    sha256: str

    def get(self) -> "LoadedWhitelist":
        """Itself: reads like the worker's ``CurrentWhitelist``, whose ``get`` is one consistent read."""
        return self


def load_whitelist(path: str | Path) -> LoadedWhitelist:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WhitelistError(str(path), [Problem(0, "<file>", f"cannot read: {exc.strerror or exc}")]) from None
    return load_whitelist_bytes(data, str(path))


def load_whitelist_bytes(data: bytes, path: str = "<whitelist>") -> LoadedWhitelist:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WhitelistError(path, [Problem(0, "<file>", f"not UTF-8: {exc}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise WhitelistError(path, [Problem(line, "<yaml>", f"{exc.problem or exc}")]) from None
    if root is None:
        raise WhitelistError(path, [Problem(1, "<file>", "the file is empty")])

    duplicates: list[Problem] = []
    value = _construct(root, (), duplicates)
    if duplicates:
        raise WhitelistError(path, duplicates)
    if not isinstance(value, dict):
        raise WhitelistError(path, [Problem(root.start_mark.line + 1, "<file>", "the top level must be a mapping")])

    problems = [_located(root, loc, msg) for loc, msg in consistency_problems(value) + escalation_problems(value) + aws_problems(value)]
    try:
        whitelist = Whitelist.model_validate(value)
    except ValidationError as exc:
        raise WhitelistError(path, problems + _problems(exc, root)) from None
    if problems:  # the model refuses these too; this keeps the loader's contract plain
        raise WhitelistError(path, problems)
    return LoadedWhitelist(whitelist, path, hashlib.sha256(data).hexdigest())


def _construct(node: yaml.Node, loc: Loc, duplicates: list[Problem]) -> Any:
    """Build plain Python values from nodes, noting keys given twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                duplicates.append(
                    Problem(key_node.start_mark.line + 1, _dotted(loc + (key,)), "key given twice in the same mapping")
                )
                continue
            out[key] = _construct(value_node, loc + (key,), duplicates)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loc + (i,), duplicates) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    # A fresh constructor per node: SafeLoader caches constructed nodes and is not reentrant.
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _problems(exc: ValidationError, root: yaml.Node) -> list[Problem]:
    problems = []
    for err in exc.errors():
        if err["type"] == "whitelist_consistency":
            continue  # the loader already located these from the document itself
        loc = tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc + ("kind",)
        problems.append(_located(root, loc, _message(err)))
    return problems


def _located(root: yaml.Node, loc: Loc, message: str) -> Problem:
    line, path = _locate(root, loc)
    return Problem(line, _dotted(path) or "<top>", message)


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the whitelist format)"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"unknown kind {err['input'].get('kind')!r}; expected one of: {', '.join(KINDS)}"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, Loc]:
    """The line of the deepest node that ``loc`` reaches, and the path actually walked.

    Pydantic locations contain union tags (``'asg.scale'``) that are not keys in the
    file; they are skipped. A missing key stops the walk at its parent mapping.
    """
    node, line, path = root, root.start_mark.line + 1, ()
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if _scalar(k) == part), None)
            if hit is None:
                if _is_missing_key_part(node, part):
                    path = path + (part,)
                continue
            node, line, path = hit[1], hit[0].start_mark.line + 1, path + (part,)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node, line, path = node.value[part], node.value[part].start_mark.line + 1, path + (part,)
    return line, path


def _is_missing_key_part(node: yaml.MappingNode, part: str | int) -> bool:
    # A union tag such as 'asg.scale' equals the mapping's own kind value: not a key.
    return not any(_scalar(k) == "kind" and _scalar(v) == part for k, v in node.value)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
