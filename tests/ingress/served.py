"""The ingress served for real on loopback by uvicorn, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from selfheal.ingress.server import server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(app: FastAPI):
    """Serve ``app`` on 127.0.0.1; yield (base URL, list of (path, status) answered)."""
    answered: list[tuple[str, int]] = []

    @app.middleware("http")
    async def record(request: Request, call_next):
        response = await call_next(request)
        answered.append((request.url.path, response.status_code))
        return response

    port = free_port()
    srv = server(app, "127.0.0.1", port)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", answered
    finally:
        srv.should_exit = True
        await task
