"""Label matchers in Alertmanager's syntax: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

On-call engineers already write these in Alertmanager routes and silences, so the
whitelist reuses them rather than inventing a selector language. As in Alertmanager,
regular expressions are fully anchored, and a label that is absent matches as the
empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Mapping

_MATCHER = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^"\s]*))\s*$"""
)

Op = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str

    @property
    def positive(self) -> bool:
        """Whether the matcher selects by what a label *is*, not what it is not."""
        return self.op in ("=", "=~") and self.value != ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


# Matching runs for every entry on every incident (the excerpt of a 500-entry whitelist
# parses 500 matcher lists): parsed once per distinct text. A Matcher is frozen, so the
# cached one can be shared; an invalid text raises every time (exceptions are not cached).
@lru_cache(maxsize=8192)
def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; raise ``ValueError`` naming the text and what is wrong with it."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(
            f"{text!r} is not a label matcher; write name=\"value\", name!=\"value\", "
            f"name=~\"regex\" or name!~\"regex\""
        )
    raw = found.group("quoted")
    value = re.sub(r"\\(.)", r"\1", raw) if raw is not None else found.group("bare")
    op: Op = found.group("op")  # type: ignore[assignment]
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: invalid regular expression: {exc}") from None
    return Matcher(found.group("name"), op, value)


def matches_all(matchers: list[str], labels: Mapping[str, str]) -> bool:
    return all(parse_matcher(m).matches(labels) for m in matchers)


# --- could one alert match both? (``selfheal whitelist lint``) ---------------------------------

# A regular expression that is a plain alternation of literals ("a|b|c"): its values can be
# listed, so whether it meets another matcher is decidable.
_LITERALS = re.compile(r"[A-Za-z0-9_.:/@ -]*(?:\|[A-Za-z0-9_.:/@ -]*)*")
_FRESH = "lint-example-value"  # a value no matcher names: what a != or !~ lets through


def common_labels(*matcher_lists: list[str]) -> tuple[str, dict[str, str] | None]:
    """Whether one label set could satisfy every matcher of every list:
    ``("overlap", example)``, ``("disjoint", None)``, or ``("may", None)`` where a regular
    expression makes it undecidable here (no value tried satisfies all, but one might)."""
    by_label: dict[str, list[Matcher]] = {}
    for matchers in matcher_lists:
        for text in matchers:
            m = parse_matcher(text)
            by_label.setdefault(m.name, []).append(m)
    example, undecided = {}, False
    for name, matchers in sorted(by_label.items()):
        candidates = ["", _FRESH]
        complete = False  # whether the candidates cover every value that could satisfy all
        for m in matchers:
            if m.op == "=":
                candidates.append(m.value)
                complete = True
            elif m.op == "=~" and _LITERALS.fullmatch(m.value):
                candidates += m.value.split("|")
                complete = True
            elif m.op == "=~":
                candidates += [v for v in _samples(m.value) if v]
        found = next((v for v in candidates if all(m.matches({name: v}) for m in matchers)), None)
        if found is None:
            if not complete:
                undecided = True
            else:
                return "disjoint", None
        elif found:
            example[name] = found
    return ("may", None) if undecided else ("overlap", example)


def _samples(pattern: str) -> list[str]:
    """A few strings a simple regular expression is likely to match (its literal prefix)."""
    prefix = re.match(r"[A-Za-z0-9_:/@ -]*", pattern).group(0)
    return [prefix, prefix + "x", prefix + "0"] if prefix else []
