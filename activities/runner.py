"""Command runners: how activities reach a host's ``systemctl`` and ``journalctl``.

Activities receive a runner in their constructor and never spawn processes themselves,
so a remote runner (SSH, SSM) can replace ``LocalRunner`` without touching them, and
tests can run commands against a systemd manager in a private namespace.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class UnreachableHost(Exception):
    """This runner cannot reach the named host; retrying will not help."""


class CommandRunner(Protocol):
    """Runs ``argv`` on ``host``. ``privileged`` marks the one kind of command that changes
    the world (a restart): only it goes through the runner's privilege prefix (``sudo -n``),
    so sudoers can allow exactly the whitelisted restarts and reads need no privilege."""

    async def run(self, host: str, argv: Sequence[str], timeout: float = 60.0, privileged: bool = False) -> CommandResult: ...


class LocalRunner:
    """Runs commands on this machine, optionally behind a prefix (``env``, ``nsenter`` …).

    Only the names in ``local_hosts`` are this machine: a request for any other host is
    refused rather than silently run here.
    """

    def __init__(self, prefix: Sequence[str] = (), local_hosts: Sequence[str] | None = None,
                 privileged_prefix: Sequence[str] = ()):
        self._prefix = list(prefix)
        self._privileged = list(privileged_prefix)
        self._local = set(local_hosts) if local_hosts is not None else {"localhost", socket.gethostname()}

    async def run(self, host: str, argv: Sequence[str], timeout: float = 60.0, privileged: bool = False) -> CommandResult:
        if host not in self._local:
            raise UnreachableHost(f"host {host!r} is not this machine ({', '.join(sorted(self._local))})")
        prefix = self._prefix + (self._privileged if privileged else [])
        proc = await asyncio.create_subprocess_exec(
            *prefix, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        return CommandResult(tuple(argv), proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
