"""Free loopback ports for the processes tests start: one way to choose them, for all.

A port found by binding port 0 is from the kernel's ephemeral range, and the kernel hands
it out again to the next bind to port 0 or outgoing connection, perhaps before the
process it was chosen for binds it. The Temporal dev server picks its internal ports that
way, so a UI port chosen so was seen taken ("bind: address already in use") by the time
the server started its UI. Ports are therefore chosen at random *below* the ephemeral
range (net.ipv4.ip_local_port_range), where nothing is handed out unasked; each is checked
free by binding it, and none is given twice in one test process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOWEST = 10_000  # below are many well-known services' defaults
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, outside the ephemeral range, and not given
    before by this process."""
    top = _ephemeral_start()
    if top - LOWEST < 1_000:
        raise RuntimeError(f"the ephemeral port range starts at {top}: no room below it for test ports")
    with _lock:
        for _ in range(1_000):
            port = random.randrange(LOWEST, top)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port found between {LOWEST} and {top}")
