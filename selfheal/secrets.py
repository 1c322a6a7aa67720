"""Secrets from files: every secret setting ``NAME`` also reads from ``NAME_FILE``.

systemd's ``LoadCredential=`` (and Kubernetes secrets, Docker secrets) hand a process its
secrets as files, so that they never sit in an environment that ``/proc/PID/environ``, a
crash report or a child process can show. Setting both ``NAME`` and ``NAME_FILE`` is
refused: one of them would be silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

INGRESS_SOURCES = ("alertmanager", "grafana", "generic")
SECRETS = (
    "TEMPORAL_API_KEY",
    "SELFHEAL_SLACK_TOKEN",
    "SELFHEAL_SLACK_SIGNING_SECRET",
    "SELFHEAL_LLM_API_KEY",
    "SELFHEAL_PAGERDUTY_ROUTING_KEY",
    *(f"SELFHEAL_INGRESS_{s.upper()}_{kind}" for s in INGRESS_SOURCES for kind in ("TOKEN", "HMAC_SECRET")),
)
MAX_SECRET_BYTES = 65_536  # a token or key, not a file someone pointed at by mistake


class SecretFileError(ValueError):
    """A ``_FILE`` setting that cannot be used; the message names the variable, never the secret."""


def read_secret_files(env: Mapping[str, str], names: Iterable[str] = SECRETS) -> dict[str, str]:
    """``env`` with each ``NAME_FILE`` read into ``NAME`` (trailing newline dropped) and removed."""
    out = dict(env)
    for name in names:
        path = out.pop(f"{name}_FILE", None)
        if not path:
            continue
        if out.get(name):
            raise SecretFileError(f"both {name} and {name}_FILE are set: keep one")
        try:
            with Path(path).open("rb") as file:
                data = file.read(MAX_SECRET_BYTES + 1)  # bounded: /dev/zero named by mistake must not fill memory
        except OSError as exc:
            raise SecretFileError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        if len(data) > MAX_SECRET_BYTES:
            raise SecretFileError(f"{name}_FILE: {path} is more than {MAX_SECRET_BYTES} bytes, too large for a secret")
        try:
            value = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SecretFileError(f"{name}_FILE: {path} is not UTF-8 text") from None
        if not value:
            raise SecretFileError(f"{name}_FILE: {path} is empty")
        out[name] = value
    return out
