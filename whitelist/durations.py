"""Durations as reviewers write them: ``90s``, ``10m``, ``1h30m``, ``2d``.

ISO 8601 (``PT10M``) and plain seconds are accepted too, because that is how a
``timedelta`` comes back after crossing Temporal's pydantic data converter.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SHORT = re.compile(r"^(?:\d+[dhms])+$")
_PART = re.compile(r"(\d+)([dhms])")


def parse_duration(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if _SHORT.match(text):
            return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))
    # Anything else (ISO 8601, numbers, timedelta) is left to pydantic, whose error names the value.
    return value


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be longer than 0s, got {format_duration(value)}")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
NonNegativeDuration = Annotated[Duration, AfterValidator(_not_negative)]
