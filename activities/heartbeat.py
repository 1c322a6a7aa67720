"""Every activity heartbeats while it works, so a worker that dies is noticed in seconds.

Without heartbeats Temporal learns that an activity's worker is gone only when the
activity's start-to-close timeout expires (a minute for a read, ten for a remediation),
and the incident stalls that long. With them, it learns within the workflow's heartbeat
timeout (``IncidentSettings.heartbeat_timeout``) and retries on a live worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any, Awaitable, Callable, TypeVar

from temporalio import activity

T = TypeVar("T")
HEARTBEAT_EVERY = 1.0  # seconds; the worker forwards them at most once a second (selfheal.worker)
# What this attempt has said it did (an SSM CommandId, say), sent with every heartbeat so
# that the next attempt, after a crash, can find it (``recall``) instead of doing it again.
_details: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("selfheal_heartbeat_details", default=None)


def remember(key: str, value: Any) -> None:
    """Record ``key`` in this attempt's heartbeat details, and heartbeat it now.

    Temporal keeps the last heartbeat's details when an attempt dies; ``recall`` in the
    next attempt reads them back.
    """
    details = _details.get()
    if details is None:
        details = dict(recall_all())
        _details.set(details)
    details[key] = value
    activity.heartbeat(details)


def recall_all() -> dict[str, Any]:
    """Everything earlier attempts of this activity remembered (their last heartbeat)."""
    earlier = activity.info().heartbeat_details
    first = earlier[0] if earlier else None
    return dict(first) if isinstance(first, dict) else {}


def recall(key: str) -> Any:
    """What this or an earlier attempt remembered under ``key``, or None."""
    details = _details.get()
    if details is not None and key in details:
        return details[key]
    return recall_all().get(key)


async def with_heartbeats(work: Awaitable[T]) -> T:
    """Await ``work`` while heartbeating."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            details = _details.get()
            activity.heartbeat(*((details,) if details else ()))
    finally:
        if not task.done():  # the activity was cancelled: stop its work too
            task.cancel()


def heartbeating(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Decorate an activity method (below ``@activity.defn``) to heartbeat while it runs."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        # Earlier attempts' details carry over: a heartbeat without them would erase them.
        # One dict, shared by reference with the task that does the work (it runs in a
        # copy of this context), so what it remembers goes out with every heartbeat.
        _details.set(recall_all())
        return await with_heartbeats(fn(*args, **kwargs))

    return wrapper
