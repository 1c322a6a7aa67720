"""Reading the end of a log, cheaply and within bounds: a local file read backwards from its
end (continued into its logrotate predecessor), a remote one with ``tail`` through the
runner (no shell), and a unit's most recent journal entries. ``evidence_sources.py``
bounds and redacts what these return."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path

from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import Scope, SystemdError, as_activity_errors

CHUNK = 64 * 1024
MAX_SCAN = 8 * 1024 * 1024          # bytes of one file read backwards: bounds a file of endless lines
_TIMESTAMP = re.compile(
    r"^\[?(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d{1,9}))?"
    r"\s?(?P<zone>Z|[+-]\d{2}:?\d{2})?(?![\d:])"
)


def leading_timestamp(line: str) -> datetime | None:
    """The ISO-8601 timestamp a log line starts with (``2026-11-26T10:00:00.123Z``,
    ``[2026-11-26 10:00:00,123+0100]``), in UTC; a timestamp without a zone is local time."""
    m = _TIMESTAMP.match(line)
    if m is None:
        return None
    frac = (m["frac"] or "")[:6]
    zone = m["zone"] or ""
    if zone == "Z":
        zone = "+00:00"
    elif zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        t = datetime.fromisoformat(f"{m['date']}T{m['time']}{'.' + frac if frac else ''}{zone}")
    except ValueError:
        return None
    return t.astimezone(timezone.utc)  # naive: taken as local time


def tail_lines(path: Path, n: int, scan: int = MAX_SCAN) -> tuple[list[bytes], bool]:
    """The last ``n`` lines of a file, oldest first, read backwards from its end (at most
    ``scan`` bytes), and whether anything precedes them. A final newline ends the last line."""
    if n <= 0:
        return [], path.stat().st_size > 0
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        pos, chunks, newlines = end, [], 0
        # One newline more than lines wanted, past the one that ends the file.
        while pos > 0 and end - pos < scan and newlines <= n:
            step = min(CHUNK, pos, scan - (end - pos))
            pos -= step
            handle.seek(pos)
            chunk = handle.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
        data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        return [], pos > 0
    lines = data.split(b"\n")
    more = pos > 0
    if more:
        lines = lines[1:]  # its start lies before what was read
    if len(lines) > n:
        lines, more = lines[-n:], True
    return lines, more


def decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


def local_tail(path: str, limit: int) -> tuple[list[str], bool] | str:
    """Lines oldest first (the predecessor's, then the file's), whether more precede them;
    or why the file could not be read."""
    current, previous = Path(path), Path(path + ".1")
    out: list[str] = []
    try:
        have_current = current.exists()
        if have_current:
            if not stat.S_ISREG(current.stat().st_mode):
                return "not a regular file"
            lines, more = tail_lines(current, limit)
            out = [decode_line(line) for line in lines]
        else:
            more = False
        if not more and len(out) < limit and previous.is_file():
            older, more = tail_lines(previous, limit - len(out))
            out = [decode_line(line) for line in older] + out
        elif not have_current:
            return "the file does not exist (nor its rotated predecessor .1)"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return out, more


async def remote_tail(runner: CommandRunner, host: str, path: str, limit: int) -> tuple[list[str], bool] | str:
    async def tail(p: str, n: int) -> list[str] | None:
        with as_activity_errors():
            result = await runner.run(host, ["tail", "-n", str(n), "--", p], timeout=60)
        if not result.ok:
            if "No such file" in result.stderr:
                return None
            raise TailFailed(f"tail failed ({result.returncode}): {result.stderr.strip()[:300]}")
        text = result.stdout[:-1] if result.stdout.endswith("\n") else result.stdout
        return [line.rstrip("\r") for line in text.split("\n")] if text else []

    try:
        current = await tail(path, limit + 1)  # one more: whether more precede them
        lines = current or []
        more = len(lines) > limit
        lines = lines[-limit:]
        if not more and len(lines) < limit:
            need = limit - len(lines)
            older = await tail(path + ".1", need + 1)
            if older is None and current is None:
                return "the file does not exist (nor its rotated predecessor .1)"
            older = older or []
            more = len(older) > need
            lines = older[-need:] + lines
    except TailFailed as exc:
        return str(exc)
    return lines, more


async def recent_journal(runner: CommandRunner, host: str, scope: Scope, unit: str, since: datetime, until: datetime,
                         limit: int) -> list[tuple[str, str, datetime | None]]:
    """The unit's most recent ``limit`` messages in [since, until], oldest first, as
    ``(key, message, timestamp)``; ``key`` is a short hash of the entry's journal cursor,
    the same whenever the entry is read.

    Not ``systemd.journal_lines``: with ``--since``, journalctl seeks to the window's start
    and ``--lines`` keeps the *first* entries after it (systemd 252); ``--reverse`` reads
    from the end, so the lines kept are the most recent ones.
    """
    unit_flag = "--user-unit" if scope == "user" else "--unit"
    argv = [
        "journalctl", unit_flag, unit, "--output", "json", "--output-fields", "MESSAGE", "--no-pager",
        "--since", f"@{int(since.timestamp())}", "--until", f"@{int(until.timestamp()) + 1}",
        "--lines", str(limit), "--reverse",
    ]
    result = await runner.run(host, argv, timeout=60)
    if not result.ok:
        raise SystemdError(f"journalctl for {unit} failed ({result.returncode}): {result.stderr.strip()[:500]}")
    entries = []
    for raw in result.stdout.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
            message = bytes(message).decode(errors="replace")
        if not isinstance(message, str):
            continue
        try:
            when = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, timezone.utc)
        except (KeyError, TypeError, ValueError):
            when = None
        if when is not None and not since <= when <= until:
            continue
        cursor = str(entry.get("__CURSOR") or f"{when}:{message}")
        entries.append((hashlib.sha256(cursor.encode()).hexdigest()[:12], message, when))
    entries.reverse()
    return entries


class TailFailed(Exception):
    pass
