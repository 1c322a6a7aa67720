"""A command runner over AWS Systems Manager: only the whitelist's own SSM documents.

``run`` accepts exactly the argv ``systemd.py`` and the remediator send for a whitelisted
system-scope unit on a host its entry covers, sends that entry's document
(``activities/ssm_documents.py``; ``selfheal grants ssm`` writes them) with the matching
``action`` and polls ``GetCommandInvocation`` until the command ends. Anything else is refused before any AWS call.

A restart's CommandId goes into the activity's heartbeat details as soon as it is sent: a
retry (the worker died with the command in flight) polls that command instead of sending a
second restart, unless it already ended without success (then the retry is a new try).
Reads are never reused: a ``show`` after a restart must see the state after it.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
from fnmatch import fnmatchcase
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from selfheal.activities.aws_clients import AwsClients
from selfheal.activities.heartbeat import recall, remember
from selfheal.activities.runner import CommandResult, UnreachableHost
from selfheal.activities.ssm_documents import PREFIX, commands, document_name, system_entries
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry

_INSTANCE = re.compile(r"i-[0-9a-f]{8,17}")
TERMINAL = frozenset({"Success", "Failed", "Cancelled", "TimedOut"})  # Pending, InProgress, Delayed, Cancelling: wait


class SsmTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
    account: str = Field(pattern=r"^\d{12}$")
    document_prefix: str = Field(default=PREFIX, pattern=r"^[A-Za-z0-9_.\-]{3,40}$")
    poll_every: float = Field(default=1.0, gt=0, le=60)
    command_timeout: int = Field(default=600, ge=30, le=172800)  # SendCommand's bounds on delivery

    @field_validator("document_prefix")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower().startswith(("aws", "amazon", "amzn")):
            raise ValueError("SSM reserves document names starting with aws, amazon or amzn")
        return value


class NotWhitelistedCommand(UnreachableHost):  # as_activity_errors: non-retryable
    """Not one of the whitelisted documents' commands: no retry can make it one."""


def action_for(unit: str, argv: tuple[str, ...]) -> str | None:
    """Which document action ``argv`` is for ``unit``, or None. Equality, never a prefix."""
    if journal_window(unit, argv) is not None:
        return "journal"
    return next((action for action, expected in commands(unit).items() if argv == tuple(expected)), None)


def journal_window(unit: str, argv: tuple[str, ...]) -> tuple[int, int | None, int] | None:
    """``(since, until, lines)`` when ``argv`` reads the unit's journal the way selfheal does:
    ``journal_lines`` (``--since @TS --lines N``) or the evidence reader (``--since @TS
    --until @TS --lines N``), both ``--reverse``; None for anything else. The document runs
    its own fixed read; this window is applied to its output (``narrow_journal``)."""
    journal = commands(unit)["journal"]
    if argv[:9] != tuple(journal[:9]) or argv[-1:] != tuple(journal[12:]):
        return None
    middle = argv[9:-1]
    if len(middle) == 3 and middle[1] == "--lines":
        since, until, lines = middle[0], None, middle[2]
    elif len(middle) == 5 and middle[1] == "--until" and middle[3] == "--lines":
        since, until, lines = middle[0], middle[2], middle[4]
    else:
        return None
    stamp = re.compile(r"@\d{1,12}")
    if not stamp.fullmatch(since) or (until is not None and not stamp.fullmatch(until)) or not re.fullmatch(r"\d{1,7}", lines):
        return None
    return int(since[1:]), int(until[1:]) if until is not None else None, int(lines)


def narrow_journal(window: tuple[int, int | None, int], stdout: str) -> str:
    """The document reads fixed bounds; keep what the caller asked for (its window, last N)."""
    since, until, limit = window
    low, high = since * 1_000_000, (until * 1_000_000 if until is not None else None)
    # Newest first (--reverse), as the caller asked: the first ``limit`` are the newest.
    kept = [line for line in stdout.splitlines() if _stamp(line) >= low and (high is None or _stamp(line) <= high)]
    return "".join(f"{line}\n" for line in kept[:limit] if limit)


def _stamp(line: str) -> int:
    try:
        return int(json.loads(line).get("__REALTIME_TIMESTAMP", -1))
    except (ValueError, TypeError, AttributeError):
        return -1  # a cut-off last line (SSM keeps 24,000 characters of stdout), or not an entry


class SsmRunner:
    def __init__(self, config: SsmTarget, loaded: LoadedWhitelist, clients: AwsClients):
        self._config, self._entries, self._clients = config, system_entries(loaded), clients

    def _match(self, host: str, argv: tuple[str, ...]) -> tuple[SystemdRestartEntry, str]:
        for entry in (e for e in self._entries if fnmatchcase(host, e.target.host)):
            if action := action_for(entry.target.unit, argv):
                return entry, action
        raise NotWhitelistedCommand(
            f"the SSM runner runs only the whitelisted documents (show, restart, journal of a system unit "
            f"whitelisted for {host}); refusing {' '.join(argv)[:200]!r}")

    async def run(self, host: str, argv: Sequence[str], timeout: float = 60.0, privileged: bool = False) -> CommandResult:
        argv = tuple(argv)
        if not isinstance(host, str) or not _INSTANCE.fullmatch(host):
            raise UnreachableHost(f"the SSM runner reaches EC2 instances by id (i-0123abcd…), not {host!r}")
        entry, action = self._match(host, argv)
        if privileged != (action == "restart"):
            raise NotWhitelistedCommand(f"{action} must {'' if action == 'restart' else 'not '}be sent as privileged")
        document = document_name(entry, self._config.document_prefix)
        async with asyncio.timeout(timeout):  # raises TimeoutError (= asyncio.TimeoutError)
            command_id = await self._command(host, document, action, timeout)
            invocation = await self._wait(command_id, host)
        stdout, stderr = invocation.get("StandardOutputContent", ""), invocation.get("StandardErrorContent", "")
        if action == "journal":
            stdout = narrow_journal(journal_window(entry.target.unit, argv), stdout)
        if invocation["Status"] == "Success":
            return CommandResult(argv, 0, stdout, stderr)
        # -1 means the script never ran (undeliverable, delivery timed out): not a command's exit code.
        code = invocation.get("ResponseCode")
        stderr += f"\n[ssm {invocation['Status']} ({invocation.get('StatusDetails', '')}), command {command_id} on {host}]"
        return CommandResult(argv, code if isinstance(code, int) and code > 0 else 255, stdout, stderr)

    async def _command(self, host: str, document: str, action: str, timeout: float) -> str:
        key = f"ssm:{host}:{document}:{action}"
        reuse = action == "restart" and activity.in_activity()
        earlier = recall(key) if reuse else None
        if isinstance(earlier, str):
            seen = (await self._invocation(earlier, host) or {}).get("Status")
            if seen not in TERMINAL or seen == "Success":
                activity.logger.info("polling %s sent by an earlier attempt instead of sending it again", earlier)
                return earlier
        await self._clients.require_account(self._config.region, self._config.account)
        sent = await self._clients.call(
            "ssm", self._config.region, "send_command", InstanceIds=[host], DocumentName=document,
            Parameters={"action": [action]}, Comment=f"selfheal {action} {document}"[:100],
            # A command that could not start before we stop waiting must not start later.
            TimeoutSeconds=max(30, min(self._config.command_timeout, math.ceil(timeout))))
        command_id = sent["Command"]["CommandId"]
        if reuse:
            remember(key, command_id)
        return command_id

    async def _invocation(self, command_id: str, host: str) -> dict[str, Any] | None:
        try:
            return await self._clients.call("ssm", self._config.region, "get_command_invocation",
                                            CommandId=command_id, InstanceId=host)
        except ApplicationError as exc:
            if exc.type == "Aws.InvocationDoesNotExist":  # normal for a moment after sending
                return None
            raise

    async def _wait(self, command_id: str, host: str) -> dict[str, Any]:
        while (invocation := await self._invocation(command_id, host)) is None or invocation.get("Status") not in TERMINAL:
            await asyncio.sleep(self._config.poll_every)
        return invocation
