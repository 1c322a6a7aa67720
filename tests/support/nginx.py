"""Test harness: Debian's nginx as a TLS front for the Temporal dev server.

The dev server speaks plain gRPC only; a secured cluster or Temporal Cloud is reached
through TLS. nginx 1.22 (``grpc_pass``) stands in for that front, with two servers on
free loopback ports, both passing gRPC to the dev server:

- ``mtls``: mutual TLS. ``ssl_verify_client on`` against the test's CA, so a client
  without a certificate, or with one from another CA, never reaches Temporal: it gets a
  gRPC UNAUTHENTICATED answer naming nginx's verdict (``NONE``, ``FAILED:...``).
- ``api_key``: server TLS only, and the ``authorization`` metadata must be exactly
  ``Bearer <key>`` (as the SDK sends an API key). Anything else gets a gRPC
  UNAUTHENTICATED answer that says why.

Worker long polls last about a minute, so the gRPC timeouts are raised well above it.

Usage::

    with Nginx(pki, upstream="127.0.0.1:7233", api_key="k") as front:
        front.mtls        # "127.0.0.1:PORT"
        front.api_key_address
        front.calls()     # the gRPC calls that crossed it, with the client certificate's verdict
    # nginx is stopped by its own pid; front.log_text() keeps its error log.

``find_nginx() -> (path | None, problem)``; ``$NGINX_BIN`` overrides. ``require_nginx()``
skips without it, and fails under ``CI=true`` (``tests.conftest.require``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from tests.support.binaries import find_binary, free_port, require_binary
from tests.support.certs import Pki
from tests.support.waiting import wait_until

DEBIAN_BINARY = "/usr/sbin/nginx"
ENV_BINARY = "NGINX_BIN"
# Well above a worker's long poll (about 60-70 s): nginx must not cut a poll that is waiting.
GRPC_TIMEOUT = "300s"


def find_nginx() -> tuple[str | None, str | None]:
    return find_binary("nginx", DEBIAN_BINARY, ENV_BINARY, "nginx")


def require_nginx() -> str:
    return require_binary("nginx", DEBIAN_BINARY, ENV_BINARY, "nginx")


_free_port = free_port


def _config(prefix: Path, pki: Pki, upstream: str, api_key: str, mtls_port: int, api_key_port: int) -> str:
    # As root, nginx's workers would switch to "nobody", who cannot enter the test's 0700
    # temp dirs; the test's own user is the right one. Unprivileged, "user" is ignored
    # with a warning, so leave it out.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    tls = f"""
        ssl_certificate {pki.server.cert};
        ssl_certificate_key {pki.server.key};
        ssl_protocols TLSv1.2 TLSv1.3;
"""
    upstream_block = f"""
        location / {{
            grpc_pass grpc://{upstream};
            grpc_read_timeout {GRPC_TIMEOUT};
            grpc_send_timeout {GRPC_TIMEOUT};
            grpc_socket_keepalive on;
        }}
"""
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;

events {{ worker_connections 256; }}

http {{
    # One line per gRPC call, written when the call ends (a long poll: when it returns):
    # tests read it to show which calls crossed the front, and with which certificate.
    log_format calls '$request_uri $status verify=$ssl_client_verify subject="$ssl_client_s_dn"';
    access_log {prefix}/access.log calls;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_body_timeout {GRPC_TIMEOUT};
    client_max_body_size 0;  # Temporal bounds its own payloads
    keepalive_timeout {GRPC_TIMEOUT};

    # The SDK sends an API key as "authorization: Bearer <key>"; a long key needs a wide bucket.
    map_hash_bucket_size 256;
    map $http_authorization $selfheal_key_refused {{
        "Bearer {api_key}" 0;
        default 1;
    }}

    server {{  # mutual TLS
        listen 127.0.0.1:{mtls_port} ssl http2;
        {tls}
        ssl_client_certificate {pki.ca.cert};
        ssl_verify_client on;
        ssl_verify_depth 1;
        # nginx answers a missing (496) or untrusted (495) certificate with an HTML 400 page,
        # which a gRPC client can only report as a protocol error: answer in gRPC instead.
        error_page 495 496 = @no_certificate;
        location @no_certificate {{
            default_type application/grpc;
            add_header grpc-status 16 always;
            add_header grpc-message "client certificate refused by the TLS front: $ssl_client_verify" always;
            return 200;
        }}
        {upstream_block}
    }}

    server {{  # TLS + API key
        listen 127.0.0.1:{api_key_port} ssl http2;
        {tls}
        if ($selfheal_key_refused) {{
            return 401;
        }}
        # A gRPC "trailers-only" answer: HTTP 200 with the status in the headers, so the
        # client reads UNAUTHENTICATED and the reason rather than a bare HTTP 401.
        error_page 401 = @refused;
        location @refused {{
            default_type application/grpc;
            add_header grpc-status 16 always;
            add_header grpc-message "API key refused by the TLS front" always;
            return 200;
        }}
        {upstream_block}
    }}
}}
"""


class PortTaken(RuntimeError):
    """nginx could not bind a port that was free a moment before."""


class Nginx:
    """nginx in front of ``upstream`` (the dev server), with ``mtls`` and ``api_key_address``."""

    def __init__(self, pki: Pki, upstream: str, api_key: str, *, binary: str | None = None,
                 start_timeout: float = 15.0, stop_timeout: float = 10.0) -> None:
        self.pki, self.upstream, self.api_key = pki, upstream, api_key
        self.binary = binary or require_nginx()
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.prefix: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.mtls_port = self.api_key_port = 0
        self._log = ""

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def api_key_address(self) -> str:
        return f"127.0.0.1:{self.api_key_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                return self._start()
            except PortTaken:
                self.stop()  # another process took a port between our probe and nginx's bind
                if attempt == attempts - 1:
                    raise RuntimeError(f"nginx found its ports taken {attempts} times:\n{self._log}") from None
            except BaseException:
                self.stop()
                raise

    def _start(self) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="selfheal-nginx-"))
        self.mtls_port, self.api_key_port = _free_port(), _free_port()
        conf = self.prefix / "nginx.conf"
        conf.write_text(_config(self.prefix, self.pki, self.upstream, self.api_key, self.mtls_port, self.api_key_port))
        # -t first: a config mistake reads better from nginx's checker than from a timeout.
        check = subprocess.run([self.binary, "-p", str(self.prefix), "-c", str(conf), "-t"],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its config:\n{check.stderr}")
        with (self.prefix / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen([self.binary, "-p", str(self.prefix), "-c", str(conf)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        try:
            wait_until(lambda: self._accepts_tls(self.mtls_port) and self._accepts_tls(self.api_key_port),
                       timeout=self.start_timeout, interval=0.05)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not accept TLS within {self.start_timeout}s:\n{self._log}") from None

    def _accepts_tls(self, port: int) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.log_text()
            if "Address already in use" in log:
                raise PortTaken(log)
            raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{log}")
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.client.cert), str(self.pki.client.key))
        context.set_alpn_protocols(["h2"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.selected_alpn_protocol() == "h2"
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Fast shutdown: a graceful one (SIGQUIT) would wait out every long poll in flight.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # nginx's workers outlive a killed master: kill its group, which is its own pid.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.prefix is not None and self.prefix.exists():
            self._log = self.log_text()
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def calls(self) -> list[str]:
        """The gRPC calls that ended at the front so far: ``/package.Service/Method STATUS verify=... subject="..."``."""
        path = self.prefix / "access.log" if self.prefix else None
        return path.read_text().splitlines() if path and path.exists() else []

    def log_text(self) -> str:
        """nginx's error log and stderr so far (kept after ``stop()``)."""
        if self.prefix is None:
            return self._log
        parts = [p.read_text(errors="replace") for p in (self.prefix / "error.log", self.prefix / "stderr.log") if p.exists()]
        return "\n".join(parts)

    def __enter__(self) -> "Nginx":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
