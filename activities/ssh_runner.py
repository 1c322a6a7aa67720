"""``SshRunner``: the ``CommandRunner`` for hosts reached over SSH (asyncssh).

Trust: the server's host key must be one pinned in ``known_hosts``; an unknown or changed
key is refused, never learned (no trust on first use). Nothing from ``~/.ssh`` (config,
agent, default keys, default known_hosts) is consulted, so what a worker trusts and
presents is exactly what its runners config says.

Errors, and who should retry them:
* ``UnreachableHost`` (non-retryable, see ``as_activity_errors``): the host key is not
  the pinned one, our key is refused, a configured file is missing, the name does not
  resolve. These are configuration problems (or an attack); retrying for minutes would
  only hide them, and must never end in trusting a different key.
* ``SshConnectError`` (a ``ConnectionError``, retryable): refused, reset, unreachable,
  timed out, dropped mid-handshake. A rebooting host or a restarting sshd looks exactly
  like this and is fixed by waiting, which is what the activity's retry policy does.
* ``TimeoutError`` when the command outlives ``timeout`` (as ``LocalRunner``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
from typing import Sequence

import asyncssh

from selfheal.activities.targets import SshTarget, check_host
from selfheal.activities.runner import CommandResult, UnreachableHost

log = logging.getLogger(__name__)

MAX_OUTPUT = 4 * 1024 * 1024  # bytes kept per stream; the rest is read and dropped
# OpenSSH's MaxSessions defaults to 10 channels per connection; stay below it.
MAX_CHANNELS = 8
_READ_CHUNK = 64 * 1024


class SshConnectError(ConnectionError):
    """The SSH server could not be reached right now; a later attempt may succeed."""


class SshRunner:
    def __init__(self, config: SshTarget, *, max_output: int = MAX_OUTPUT, max_channels: int = MAX_CHANNELS):
        self._config = config
        self._max_output = max_output
        self._max_channels = max_channels
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._channels: dict[str, asyncio.Semaphore] = {}

    @property
    def config(self) -> SshTarget:
        return self._config

    def remote_command(self, argv: Sequence[str], privileged: bool = False) -> str:
        """The command line sent to sshd. sshd hands it to the user's shell, so every word
        is quoted: the remote argv is exactly prefix + argv, and nothing in an argument
        (spaces, quotes, ``;``, ``$(…)``, newlines) is ever interpreted."""
        words = [*self._config.prefix, *(self._config.privileged_prefix if privileged else []), *argv]
        return shlex.join(words)

    async def run(self, host: str, argv: Sequence[str], timeout: float = 60.0, privileged: bool = False) -> CommandResult:
        check_host(host)
        if not argv:
            raise ValueError("empty argv")
        command = self.remote_command(argv, privileged)
        async with self._channels.setdefault(host, asyncio.Semaphore(self._max_channels)):
            process = await self._open(host, command, repeatable=not privileged)
            try:
                out, err = await asyncio.wait_for(self._collect(process), timeout)
            except asyncssh.Error as exc:
                # The connection died mid-command; it may or may not have run. Retryable:
                # the callers' own checks (the InvocationID baseline) keep a retry safe.
                _stop(process)
                raise SshConnectError(f"ssh {self._where(host)}: connection lost during the command: {exc}") from None
            except BaseException:  # timeout or cancellation: stop the remote side too
                _stop(process)
                raise
        # No status at all (the connection died after EOF) reads like ssh's own failure code.
        returncode = process.returncode if process.returncode is not None else 255
        return CommandResult(tuple(argv), returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def _open(self, host: str, command: str, repeatable: bool) -> asyncssh.SSHClientProcess:
        conn, fresh = await self._connection(host)
        try:
            return await conn.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            # A reused connection the server dropped while idle: try once more on a new
            # one. Safe when the channel itself never opened (no exec request was sent, so
            # nothing ran) or the command only reads. A restart that failed later (asyncssh's
            # "session request failed") may have reached sshd's exec; it is left to the
            # activity's retry, whose InvocationID check sees whether it happened.
            never_opened = (isinstance(exc, asyncssh.ChannelOpenError)
                            and exc.code != asyncssh.OPEN_REQUEST_SESSION_FAILED)
            if fresh or not (never_opened or repeatable):
                raise SshConnectError(f"ssh {self._where(host)}: cannot open a session: {exc!r}") from None
            log.info("ssh connection to %s went stale (%r); reconnecting", host, exc)
            await self._drop(host, conn)
            conn, _ = await self._connection(host)
            try:
                return await conn.create_process(command, encoding=None)
            except (asyncssh.Error, OSError) as again:
                raise SshConnectError(f"ssh {self._where(host)}: cannot open a session: {again}") from None

    async def _collect(self, process: asyncssh.SSHClientProcess) -> tuple[bytes, bytes]:
        process.stdin.write_eof()  # the remote command gets no input
        out, err = await asyncio.gather(self._bounded(process.stdout), self._bounded(process.stderr))
        await process.wait_closed()
        return out, err

    async def _bounded(self, stream: asyncssh.SSHReader) -> bytes:
        # Keep the first max_output bytes and keep draining the rest, so a runaway remote
        # costs bounded memory while the exit status stays real (``timeout`` bounds time).
        kept = bytearray()
        while chunk := await stream.read(_READ_CHUNK):
            room = self._max_output - len(kept)
            if room > 0:
                kept += chunk[:room]
        return bytes(kept)

    # ------------------------------------------------------------- connections

    async def _connection(self, host: str) -> tuple[asyncssh.SSHClientConnection, bool]:
        """The host's connection, opened if missing or closed; ``True`` if just opened.
        The lock makes concurrent commands for one host share one connection."""
        async with self._locks.setdefault(host, asyncio.Lock()):
            conn = self._conns.get(host)
            if conn is not None and not conn.is_closed():
                return conn, False
            conn = await self._connect(host)
            self._conns[host] = conn
            return conn, True

    async def _connect(self, host: str) -> asyncssh.SSHClientConnection:
        cfg = self._config
        address = cfg.address_for(host)
        for label, path in (("known_hosts", cfg.known_hosts), ("key", cfg.key)):
            if not os.access(path, os.R_OK):
                raise UnreachableHost(f"ssh {self._where(host)}: {label} file {path} is missing or unreadable")
        try:
            key = asyncssh.read_private_key(str(cfg.key))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise UnreachableHost(f"ssh {self._where(host)}: cannot load key {cfg.key}: {exc}") from None
        try:
            return await asyncssh.connect(
                address, port=cfg.port, username=cfg.user,
                client_keys=[key], known_hosts=str(cfg.known_hosts),
                connect_timeout=cfg.connect_timeout,
                # Only what the config names: no ~/.ssh/config, agent, X.509 roots or passwords.
                config=[], agent_path=None, x509_trusted_certs=None,
                password_auth=False, kbdint_auth=False,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UnreachableHost(
                f"ssh {self._where(host)}: the server's host key is not pinned for this host in "
                f"{cfg.known_hosts} (unknown or changed key; refusing to connect): {exc.reason}"
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise UnreachableHost(f"ssh {self._where(host)}: key {cfg.key} was refused: {exc.reason}") from None
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_AGAIN,):  # the resolver is having trouble: retry
                raise SshConnectError(f"ssh {self._where(host)}: cannot resolve {address}: {exc}") from None
            raise UnreachableHost(f"ssh {self._where(host)}: cannot resolve {address}: {exc}") from None
        except (OSError, asyncssh.Error) as exc:  # refused, reset, timed out (TimeoutError is an OSError)
            raise SshConnectError(f"ssh {self._where(host)}: cannot connect: {exc!r}") from None

    def _where(self, host: str) -> str:
        return f"{self._config.user}@{host} ({self._config.address_for(host)}:{self._config.port})"

    async def _drop(self, host: str, conn: asyncssh.SSHClientConnection) -> None:
        async with self._locks.setdefault(host, asyncio.Lock()):
            if self._conns.get(host) is conn:
                del self._conns[host]
        conn.close()

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()


def _stop(process: asyncssh.SSHClientProcess) -> None:
    """Ask sshd to SIGTERM the remote command, then close the channel: without a pty,
    closing alone would leave the command running. OpenSSH (>= 7.9) honours the signal for
    ordinary users; for a root login it refuses ("session signalling requires privilege
    separation"), and the command runs to its end with nobody reading its output."""
    try:
        process.terminate()
    except OSError:
        pass  # channel already closed
    process.close()
