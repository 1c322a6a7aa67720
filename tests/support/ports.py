"""Free loopback ports for the processes tests start: one way to choose them, for all.

A port found by binding port 0 is from the kernel's ephemeral range, and the kernel hands
it out again to the next bind to port 0 or outgoing connection, perhaps before the
process it was chosen for binds it. The Temporal dev server picks its internal ports that
way, so a UI port chosen so was seen taken ("bind: address already in use") by the time
the server started its UI. Ports are therefore chosen at random *below* the ephemeral
range (net.ipv4.ip_local_port_range), where nothing is handed out unasked; each is checked
free by binding it, and none is given twice in one test process. The suite runs in
several processes (pytest-xdist): each chooses from its own slice of that range, so two
never choose the same port at once (a check by binding cannot see a port another process
chose a moment ago and has not bound yet).
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

LOWEST = 10_000  # below are many well-known services' defaults
_given: set[int] = set()
_lock = threading.Lock()
# Not the random module's shared state: Hypothesis seeds it in its tests, deterministically
# under the CI profile, and every worker process would then draw the same ports.
_random = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _slice(lowest: int, top: int) -> tuple[int, int]:
    """This test process's share of [lowest, top): all of it, or one xdist worker's part."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (top - lowest) // max(count, 1)
    return lowest + index * size, lowest + (index + 1) * size


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, outside the ephemeral range, in this
    process's slice of it, and not given before by this process."""
    low, top = _slice(LOWEST, _ephemeral_start())
    if top - low < 1_000:
        raise RuntimeError(f"ports {low}-{top} leave no room for test ports (the ephemeral range starts at {_ephemeral_start()})")
    with _lock:
        for _ in range(1_000):
            port = _random.randrange(low, top)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port found between {low} and {top}")
