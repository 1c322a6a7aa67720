"""The ingress served for real on loopback by uvicorn, inside the test's event loop."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from selfheal.ingress.server import server
from tests.support.ports import free_port  # noqa: F401 (its users import it from here)


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
