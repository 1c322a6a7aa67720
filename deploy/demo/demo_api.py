"""The demo API that the demo whitelist heals: a tiny HTTP service with a leak.

It answers GET /healthz with 200 until its (simulated) database connection pool is
exhausted, SELFHEAL_DEMO_LEAK_AFTER seconds after it starts; from then on it answers 503
and logs "ERROR connection pool exhausted" every second. A restart empties the pool,
which is exactly what the whitelist entry restart-demo-api allows.

Standard library only, so the unit can run it with any python3.
"""

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
LEAK_AFTER = float(os.environ.get("SELFHEAL_DEMO_LEAK_AFTER", "300"))
ADDRESS = os.environ.get("SELFHEAL_DEMO_ADDRESS", "127.0.0.1")
PORT = int(os.environ.get("SELFHEAL_DEMO_PORT", "8081"))


def exhausted() -> bool:
    return time.monotonic() - STARTED >= LEAK_AFTER


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/healthz":
            self.send_error(404)
            return
        status, body = (503, b"connection pool exhausted\n") if exhausted() else (200, b"ok\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def complain() -> None:
    while True:
        if exhausted():
            print("ERROR connection pool exhausted (10/10 connections in use)", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    server = ThreadingHTTPServer((ADDRESS, PORT), Handler)
    print(f"demo API listening on {ADDRESS}:{PORT}; pool leaks after {LEAK_AFTER:g}s", flush=True)
    threading.Thread(target=complain, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
