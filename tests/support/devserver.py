"""A Temporal dev server of a test's own: its own port and SQLite file, stopped by its pid.

The session's shared server (``temporal_env``) serves most tests; this one is for tests
that stop Temporal, or that need dynamic configuration of their own (a lowered signal
limit, say).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.workflows.helpers import wait_for


class DevServer:
    def __init__(self, binary: Path, db: Path, port: int, dynamic_config: dict[str, object] | None = None):
        self.binary, self.db, self.port, self.proc = binary, db, port, None
        self.dynamic_config = dynamic_config or {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [str(self.binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
                "--db-filename", str(self.db), "--log-level", "error"]
        for key, value in self.dynamic_config.items():
            argv += ["--dynamic-config-value", f"{key}={value}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def client(self) -> Client:
        async def connect():
            try:
                client = await Client.connect(self.address, data_converter=pydantic_data_converter)
                await client.count_workflows()
                return client
            except RuntimeError:
                return None

        return await wait_for(connect, timeout=60, interval=0.2)

    def __enter__(self) -> "DevServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
