"""PromQL templates in the evidence configuration, and what an alert may put in them.

PromQL templates: ``$name`` (outside string literals and comments) is a placeholder for
the alert label ``name``. It is written WITHOUT quotes; ``render`` replaces it with the
label's value as a double-quoted PromQL string literal (``promql_string``), so an alert
can choose a value but never the shape of the query. A placeholder right after ``=~`` or
``!~`` is refused: the alert would choose a regular expression (``.*``). A label the
alert does not carry, a value over 1024 characters or one containing NUL is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_LABEL_VALUE = 1_024
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _placeholders(template: str) -> list[tuple[int, int, str]]:
    """``(start, end, label name)`` of each ``$name`` outside string literals and comments.

    Raises ValueError on a ``$`` that is not followed by a label name, an unterminated
    string literal, or a placeholder used as a regular expression (after ``=~``/``!~``).
    """
    found: list[tuple[int, int, str]] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c in "\"'`":
            j = i + 1
            while j < n and template[j] != c:
                if c != "`" and template[j] == "\\":
                    j += 2
                    continue
                if c != "`" and template[j] == "\n":
                    break
                j += 1
            if j >= n or template[j] != c:
                raise ValueError(f"unterminated string literal at offset {i}")
            i = j + 1
        elif c == "#":  # a comment, to the end of the line
            end = template.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "$":
            name = LABEL_NAME.match(template, i + 1)
            if name is None:
                raise ValueError(f"'$' at offset {i} is not followed by a label name")
            before = template[:i].rstrip()
            if before.endswith(("=~", "!~")):
                raise ValueError(f"${name.group()} follows a regular-expression matcher (=~ or !~): an alert "
                                 "would choose the regular expression; use = or != instead")
            found.append((i, name.end(), name.group()))
            i = name.end()
        else:
            i += 1
    return found


def placeholders(template: str) -> list[str]:
    """The alert labels a template uses, in order of first use."""
    return list(dict.fromkeys(name for _, _, name in _placeholders(template)))


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (Go escaping rules).

    Escapes backslash, double quote, newline, carriage return and tab by name, every
    other C0 control character and DEL as ``\\xNN``, and U+FFFD (which Prometheus's lexer
    cannot tell from an invalid byte) as ``\\ufffd``. Refuses values over 1024 characters,
    containing NUL, or that are not valid Unicode (lone surrogates).
    """
    if not isinstance(value, str):
        raise ValueError(f"a label value must be text, not {type(value).__name__}")
    if len(value) > MAX_LABEL_VALUE:
        raise ValueError(f"label value is {len(value)} characters long; at most {MAX_LABEL_VALUE} are allowed")
    if "\x00" in value:
        raise ValueError("label value contains NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("label value is not valid Unicode") from None
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif ch == "\ufffd":
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render(template: str, labels: Mapping[str, str]) -> str:
    """The template with each ``$name`` replaced by ``promql_string(labels[name])``.

    ValueError when a label is missing or its value is refused (see ``promql_string``).
    """
    parts, last = [], 0
    for start, end, name in _placeholders(template):
        if name not in labels:
            raise ValueError(f"the alert has no label {name!r}, which the query needs")
        try:
            literal = promql_string(labels[name])
        except ValueError as exc:
            raise ValueError(f"label {name!r}: {exc}") from None
        parts += [template[last:start], literal]
        last = end
    parts.append(template[last:])
    return "".join(parts)
