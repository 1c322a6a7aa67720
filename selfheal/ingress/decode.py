"""One way in for untrusted bytes: JSON decoded strictly, within limits, or refused with why.

Every class of undecodable input takes this one path to a 400, instead of each endpoint
meeting it somewhere deeper as a 500:

- encoding: the body must be UTF-8 without a byte order mark, and no string may hold a
  lone surrogate (``"\\ud800"``), which Python's ``json`` accepts and every later
  ``.encode()`` (signatures, Temporal payloads, response bodies) refuses;
- depth: at most ``MAX_DEPTH`` nested arrays and objects; nothing we accept nests deeper,
  and recursion in a parser or validator must never be the attacker's to spend;
- numbers: no infinities or NaN, no integer beyond 64 bits as an integer;
- size is bounded before decoding, by the ingress's body limit.

orjson does the first and third (it refuses what Python's ``json`` lets through), and
bounds its own recursion; the depth walk below is iterative.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 32


class Undecodable(ValueError):
    """The body is not JSON we accept; the message says why, fit for a 400 body."""


def decode_json(data: bytes | str) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"body is not JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise Undecodable(f"JSON nests more than {MAX_DEPTH} levels deep; that is the limit")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in node if isinstance(child, (dict, list)))
    return deepest
