"""Every activity heartbeats while it works, so a worker that dies is noticed in seconds.

Without heartbeats Temporal learns that an activity's worker is gone only when the
activity's start-to-close timeout expires (a minute for a read, ten for a remediation),
and the incident stalls that long. With them, it learns within the workflow's heartbeat
timeout (``IncidentSettings.heartbeat_timeout``) and retries on a live worker.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Awaitable, Callable, TypeVar

from temporalio import activity

T = TypeVar("T")
HEARTBEAT_EVERY = 1.0  # seconds; the worker forwards them at most once a second (selfheal.worker)


async def with_heartbeats(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():  # the activity was cancelled: stop its work too
            task.cancel()


def heartbeating(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Decorate an activity method (below ``@activity.defn``) to heartbeat while it runs."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        return await with_heartbeats(fn(*args, **kwargs))

    return wrapper
