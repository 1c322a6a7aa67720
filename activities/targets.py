"""Where a command may run: the host names it may name, and the local and SSH targets a
runners file configures (``routing.py``). Shared by the router and the SSH runner."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from selfheal.activities.runner import UnreachableHost

# Host names come from alert labels, i.e. from outside. Only plain DNS-ish names are let
# through, so a label can never smuggle in an option (``-oProxyCommand=…``), a user
# (``root@…``), a path or whitespace into an SSH address or a log line.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
MAX_HOST_LENGTH = 253  # the DNS limit


def valid_host(host: object) -> bool:
    return isinstance(host, str) and len(host) <= MAX_HOST_LENGTH and _HOST.fullmatch(host) is not None


def check_host(host: object) -> str:
    if not valid_host(host):
        raise UnreachableHost(f"refusing host name {host!r}: not a plain host name ([A-Za-z0-9][A-Za-z0-9_.-]*)")
    return host  # type: ignore[return-value]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)  # IPv6 literals are not host names, but are fine addresses
    except ValueError:
        return False
    return True


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalTarget(Strict):
    """This machine. ``LocalRunner`` still only answers to this machine's own names
    (``localhost`` and its hostname): a broad glob cannot turn it into "run anything here"."""

    prefix: list[str] = []
    privileged_prefix: list[str] = []


class SshTarget(Strict):
    user: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    # Where to connect; ``{host}`` is replaced by the (validated) host name.
    address: str | None = None
    key: Path
    # Required and never empty of meaning: host keys are pinned, not trusted on first use.
    known_hosts: Path
    prefix: list[str] = []
    privileged_prefix: list[str] = ["sudo", "-n"]
    connect_timeout: float = Field(default=10, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Only the one placeholder: str.format would also allow attribute access, and a
        # stray brace is far more likely a typo than a wish.
        if not (valid_host(value.replace("{host}", "h")) or _is_ip(value)):
            raise ValueError("must be a host name or IP address, optionally containing {host}")
        return value

    @field_validator("key", "known_hosts")
    @classmethod
    def _relative_to_file(cls, value: Path, info: ValidationInfo) -> Path:
        # Relative paths in a config file mean "next to the file", not "wherever the worker runs".
        value = value.expanduser()
        base = (info.context or {}).get("base_dir")
        return value if value.is_absolute() or base is None else Path(base) / value

    def address_for(self, host: str) -> str:
        return (self.address or "{host}").replace("{host}", check_host(host))
