"""Load a file a person writes into a pydantic model, or refuse it with every problem at once.

Each problem reads ``PATH:LINE: field.path: message``. The YAML is composed into nodes
first, so a problem pydantic reports on a plain value can be traced back to the line of
the offending key (for a missing key, the line of the mapping that should hold it). A key
given twice in one mapping, which PyYAML would silently collapse to the last, is refused
in the same pass as everything else: the first value is the one validated, so one slip
does not hide the file's other problems. Merge keys (``<<``) are refused too: a reviewer
must see every key where it applies.

The whitelist, the diagnosis rules, the runners, the redaction patterns and the evidence
configuration all come through here. Like the rest of this package, it imports nothing
of selfheal: the standard library, pydantic and PyYAML only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]
# A cross-field rule over the plain document, e.g. the whitelist's ``consistency_problems``:
# it runs on whatever the file holds, so its problems come in the same pass as field errors.
Check = Callable[[dict[str, Any]], list[tuple[Loc, str]]]
# A caller's wording for one pydantic error, or None for the default.
Describe = Callable[[ErrorDetails], str | None]
M = TypeVar("M", bound=BaseModel)

_MERGE, _NULL = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:null"
_BAD_KEY = object()  # a key that is not a plain scalar: never equal to a location's part


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str


class Refusal:
    """What every refusal of a reviewed file carries: the file, and every problem sorted by
    line. Mixed into an exception class (``ReviewedFileError``, the whitelist's own)."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.line, p.field))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}:{p.line}: {p.field}: {p.message}" for p in self.problems]


class ReviewedFileError(Refusal, ValueError):
    """The file was refused; ``problems`` lists every reason, each with its line. A
    ValueError, as the configuration loaders raised before, so their callers still catch it."""


def read_reviewed(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes (for callers that hash them), or the refusal naming it."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ReviewedFileError(str(path), [Problem(0, "<file>", f"cannot read: {exc.strerror or exc}")]) from None


def load_reviewed(
    source: bytes | str | os.PathLike[str],
    model: type[M],
    *,
    path: str | None = None,
    what: str = "the file's format",
    checks: Sequence[Check] = (),
    describe: Describe | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    """``source`` (the file's bytes, or a path to read) validated as ``model``.

    ``path`` names the file in problems (default: the path read, or ``<input>``); ``what``
    ends the unknown-key message (``unknown key (not part of the whitelist format)``);
    ``context`` goes to pydantic's validators. An empty file is an empty mapping when the
    model accepts one. Raises ``ReviewedFileError`` with every problem found.
    """
    if isinstance(source, bytes):
        data, path = source, path or "<input>"
    else:
        data, path = read_reviewed(source), path or str(source)
    root = _compose(data, path)
    if root is None or root.tag == _NULL:  # no document, or only "---" / "~": an empty mapping
        return _empty(model, path, checks, context)
    problems: list[Problem] = []
    value = _Builder(problems).build(root, ())
    if not isinstance(value, dict):
        problems.append(Problem(root.start_mark.line + 1, "<file>", "the top level must be a mapping"))
        raise ReviewedFileError(path, problems)
    checked = [_located(root, loc, msg) for check in checks for loc, msg in check(value)]
    problems += checked
    try:
        result = model.model_validate(value, context=context)
    except ValidationError as exc:
        problems += _problems(exc, root, what, describe, bool(checked))
        raise ReviewedFileError(path, problems) from None
    if problems:  # duplicates, or a check the model does not repeat
        raise ReviewedFileError(path, problems)
    return result


def _empty(model: type[M], path: str, checks: Sequence[Check], context: dict[str, Any] | None) -> M:
    refused = ReviewedFileError(path, [Problem(1, "<file>", "the file is empty")])
    if any(check({}) for check in checks):
        raise refused
    try:
        return model.model_validate({}, context=context)
    except ValidationError:
        raise refused from None  # every missing key of a blank file says nothing more


def _compose(data: bytes, path: str) -> yaml.Node | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReviewedFileError(path, [Problem(0, "<file>", f"not UTF-8: {exc}")]) from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # The context says what was being read ("expected a single document in the stream").
        said = ", ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise ReviewedFileError(path, [Problem(mark.line + 1 if mark else 0, "<yaml>", said)]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, but a position
        line = text.count("\n", 0, exc.position) + 1
        raise ReviewedFileError(path, [Problem(line, "<yaml>", f"{exc.reason} (character {exc.character!r})")]) from None


class _Builder:
    """Plain Python values from nodes, noting what PyYAML would hide (a key given twice)
    or refuse with a traceback (an unknown tag, a self-referencing alias)."""

    def __init__(self, problems: list[Problem]):
        self._problems = problems
        self._built: dict[int, Any] = {}  # an alias is built once, as PyYAML does: no blow-up
        self._building: set[int] = set()

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        if id(node) in self._built:
            return self._built[id(node)]
        if id(node) in self._building:
            return self._refuse(node, loc, "an alias that contains itself")
        self._building.add(id(node))
        value = self._build(node, loc)
        self._building.discard(id(node))
        self._built[id(node)] = value
        return value

    def _build(self, node: yaml.Node, loc: Loc) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            try:
                return _scalar(node)
            except yaml.YAMLError as exc:
                return self._refuse(node, loc, f"cannot read this value: {getattr(exc, 'problem', None) or exc}")
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _key(key_node)
            if key_node.tag == _MERGE:
                self._refuse(key_node, loc + ("<<",), "merge keys (<<) are not supported: write the keys out")
            elif key is _BAD_KEY:
                self._refuse(key_node, loc, "a key must be plain text or a number")
            elif key in out:
                self._refuse(key_node, loc + (key,), "key given twice in the same mapping")
            else:
                out[key] = self.build(value_node, loc + (key,))
        return out

    def _refuse(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self._problems.append(Problem(node.start_mark.line + 1, _dotted(loc) or "<top>", message))


def _scalar(node: yaml.Node) -> Any:
    # A fresh constructor per node: PyYAML's caches constructed nodes and is not reentrant.
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _key(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag == _MERGE:
        return _BAD_KEY
    try:
        return _scalar(node)
    except yaml.YAMLError:
        return _BAD_KEY


def _problems(exc: ValidationError, root: yaml.Node, what: str, describe: Describe | None, checked: bool) -> list[Problem]:
    problems = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        loc = tuple(err["loc"])
        if isinstance(ctx.get("problems"), list):
            # A model's cross-field validator names each problem's place. The checks ran the
            # same rules on the document itself; their problems are already here when any.
            if not checked:
                problems += [_located(root, loc + tuple(where), msg) for where, msg in ctx["problems"]]
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (str(ctx.get("discriminator", "")).strip("'"),)
        if loc[-1:] == ("[key]",):  # the key itself is wrong: point at it, not into its value
            loc = loc[:-1]
        problems.append(_located(root, loc, _message(err, what, describe)))
    return problems


def _message(err: ErrorDetails, what: str, describe: Describe | None) -> str:
    said = describe(err) if describe else None
    if said is not None:
        return said
    if err["type"] == "extra_forbidden":
        return f"unknown key (not part of {what})"
    if err["type"] in ("missing", "union_tag_not_found"):
        return "required key is missing"
    if err["type"] == "union_tag_invalid":  # pydantic quotes each name: "'kind'", "'a', 'b'"
        ctx = err.get("ctx") or {}
        key, expected = str(ctx.get("discriminator", "")).strip("'"), str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {key} {ctx.get('tag')!r}; expected one of: {expected}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"not a valid key: {msg}" if err["loc"][-1:] == ("[key]",) else msg


def _located(root: yaml.Node, loc: Loc, message: str) -> Problem:
    line, path = _locate(root, loc)
    return Problem(line, _dotted(path) or "<top>", message)


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, Loc]:
    """The line of the deepest node that ``loc`` reaches, and the path actually walked.

    Pydantic locations contain union tags (``'asg.scale'``) that are not keys in the
    file; they are skipped. A missing key stops the walk at its parent mapping.
    """
    node, line, path = root, root.start_mark.line + 1, ()
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if _key(k) == part), None)
            if hit is None:
                if not _is_tag(node, part):
                    path = path + (part,)
                continue
            node, line, path = hit[1], hit[0].start_mark.line + 1, path + (part,)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node, line, path = node.value[part], node.value[part].start_mark.line + 1, path + (part,)
    return line, path


def _is_tag(node: yaml.MappingNode, part: str | int) -> bool:
    # A union tag such as 'asg.scale' is the value of the mapping's discriminator, not a key.
    return any(isinstance(v, yaml.ScalarNode) and v.value == part for _, v in node.value)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def lines_of(data: bytes, path: str = "<file>") -> Callable[..., int]:
    """``line(*loc)``: the line of the node at ``loc`` (``"entries", 3``) in a file that
    loaded, for tools that point a reviewer at it (``selfheal whitelist lint``)."""
    root = _compose(data, path)

    def line(*loc: str | int) -> int:
        return _locate(root, loc)[0] if root is not None else 0

    return line
