"""Read-only systemd access shared by evidence, remediation and verification."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator, Literal

from temporalio.exceptions import ApplicationError

from selfheal.activities.runner import CommandRunner, UnreachableHost
from selfheal.contract import UnitState

Scope = Literal["system", "user"]
UNIT_PROPERTIES = ("InvocationID", "NRestarts", "ActiveEnterTimestampMonotonic", "ActiveState", "SubState", "LoadState")


class SystemdError(Exception):
    pass


class UnitNotFound(SystemdError):
    """systemd knows no such unit: retrying cannot help."""


@contextmanager
def as_activity_errors() -> Iterator[None]:
    """Turn systemd failures into Temporal errors: retry only what a retry could fix."""
    try:
        yield
    except UnreachableHost as exc:
        raise ApplicationError(str(exc), type="UnreachableHost", non_retryable=True) from None
    except UnitNotFound as exc:
        raise ApplicationError(str(exc), type="UnitNotFound", non_retryable=True) from None
    except SystemdError as exc:
        raise ApplicationError(str(exc), type="SystemdError") from None


def systemctl(scope: Scope, *args: str) -> list[str]:
    return ["systemctl", f"--{scope}", "--no-pager", *args]


async def unit_state(runner: CommandRunner, host: str, scope: Scope, unit: str) -> UnitState:
    result = await runner.run(host, systemctl(scope, "show", "-p", ",".join(UNIT_PROPERTIES), unit), timeout=30)
    if not result.ok:
        raise SystemdError(f"systemctl show {unit} failed ({result.returncode}): {result.stderr.strip()}")
    props = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        raise UnitNotFound(f"{unit} is not a unit the {scope} manager on {host} knows")
    return UnitState(
        invocation_id=props.get("InvocationID", ""),
        n_restarts=int(props.get("NRestarts") or 0),
        active_enter_monotonic=int(props.get("ActiveEnterTimestampMonotonic") or 0),
        active_state=props.get("ActiveState", ""),
        sub_state=props.get("SubState", ""),
    )


async def journal_lines(
    runner: CommandRunner, host: str, scope: Scope, unit: str, since: datetime, limit: int
) -> list[str]:
    """The unit's most recent log messages since ``since``, oldest first, at most ``limit`` of them."""
    unit_flag = "--user-unit" if scope == "user" else "--unit"
    argv = [
        # Only the message (journald adds its timestamps and cursor): less to read and carry.
        "journalctl", unit_flag, unit, "--output", "json", "--output-fields", "MESSAGE", "--no-pager",
        # --reverse: with --since, journalctl starts at the window's beginning and --lines
        # would keep the OLDEST entries (systemd 252); read from the end to keep the newest.
        "--since", f"@{since.timestamp():.0f}", "--lines", str(limit), "--reverse",
    ]
    result = await runner.run(host, argv, timeout=60)
    if not result.ok:
        raise SystemdError(f"journalctl for {unit} failed ({result.returncode}): {result.stderr.strip()}")
    lines = []
    for raw in result.stdout.splitlines():
        try:
            message = json.loads(raw).get("MESSAGE")
        except json.JSONDecodeError:
            continue
        if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
            message = bytes(message).decode(errors="replace")
        if isinstance(message, str):
            lines.append(message)
    lines.reverse()  # oldest first, as callers read a log
    return lines
