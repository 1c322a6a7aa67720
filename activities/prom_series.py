"""What a Prometheus answer says, as evidence items: one per series (a vector's value, a
matrix's last value, range and recent points, a scalar), each id'd by a hash of its
labels so the same series has the same id in every read."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from selfheal.contract import EXCERPT, EvidenceItem


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def labels_text(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def num(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def when_of(t: float) -> datetime:
    return datetime.fromtimestamp(float(t), timezone.utc)


def series_items(source: str, asked: str, data: dict) -> list[EvidenceItem]:
    """One item per series of a Prometheus answer (not yet bounded or redacted: the caller does both)."""
    kind, result = data.get("resultType"), data.get("result")
    items: list[EvidenceItem] = []
    if kind in ("scalar", "string") and isinstance(result, list) and len(result) == 2:
        items.append(EvidenceItem(id=f"{source}:{kind}", source=source, query=asked,
                                  excerpt=f"{kind} {num(result[1])}", timestamp=when_of(result[0])))
    elif kind in ("vector", "matrix") and isinstance(result, list):
        for series in result:
            if not isinstance(series, dict):
                continue
            metric = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
            digest = hashlib.sha256(json.dumps(metric, sort_keys=True).encode()).hexdigest()[:12]
            labels = labels_text(metric)
            if kind == "vector":
                t, v = series.get("value") or (0, "")
                text, when = f"{labels} = {num(v)} at {iso(when_of(t))}", when_of(t)
            else:
                text, when = matrix_text(labels, series.get("values") or [])
            # Redacted before it is cut (in _in_order): a cut secret could slip past the patterns.
            items.append(EvidenceItem.model_construct(id=f"{source}:{digest}", source=source, query=asked,
                                                      excerpt=text, timestamp=when, truncated=False))
    else:
        items.append(EvidenceItem(id=f"{source}:error", source=source, query=asked,
                                  excerpt=f"unexpected result type {str(kind)[:50]!r}"))
    return items

def matrix_text(labels: str, values: list) -> tuple[str, datetime | None]:
    if not values:
        return f"{labels}: no points", None
    floats = []
    for _, v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if x == x:  # not NaN
            floats.append(x)
    last_t, last_v = values[-1]
    head = (f"{labels}: last {num(last_v)} at {iso(when_of(last_t))}; "
            + (f"min {num(min(floats))}, max {num(max(floats))}, " if floats else "")
            + f"{len(values)} points from {iso(when_of(values[0][0]))}; values oldest first: ")
    shown: list[str] = []
    room = EXCERPT - len(head) - 2
    for _, v in reversed(values):  # the most recent values are kept when they do not all fit
        word = num(v)
        if sum(len(w) + 1 for w in shown) + len(word) + 1 > room:
            shown.append("…")
            break
        shown.append(word)
    return head + " ".join(reversed(shown)), when_of(last_t)
