"""Which runner reaches which host: a small YAML file of glob rules, first match wins.

Example (``runners.yaml``)::

    runners:
      - hosts: "localhost"
        local: {}
      - hosts: "web-*"
        ssh:
          user: selfheal
          address: "{host}.internal"     # optional; default: the host name itself
          key: /etc/selfheal/id_ed25519
          known_hosts: /etc/selfheal/known_hosts   # required: pinned host keys
          prefix: [env, XDG_RUNTIME_DIR=/run/user/1000]
      - hosts: "i-*"
        ssm:
          region: eu-west-1
          account: "123456789012"
          document_prefix: selfheal-restart-     # selfheal whitelist ssm-documents

A host that no rule matches is unreachable rather than run somewhere by default: a
command meant for ``db-1`` must never land on the worker's own machine.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from selfheal.activities.runner import CommandResult, CommandRunner, LocalRunner, UnreachableHost
from selfheal.activities.ssm_runner import SsmTarget
from selfheal.whitelist.reviewed import load_reviewed

# Host names come from alert labels, i.e. from outside. Only plain DNS-ish names are let
# through, so a label can never smuggle in an option (``-oProxyCommand=…``), a user
# (``root@…``), a path or whitespace into an SSH address or a log line.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_GLOB = re.compile(r"[A-Za-z0-9_.\-*?\[\]]+")
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


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalTarget(_Strict):
    """This machine. ``LocalRunner`` still only answers to this machine's own names
    (``localhost`` and its hostname): a broad glob cannot turn it into "run anything here"."""

    prefix: list[str] = []
    privileged_prefix: list[str] = []


class SshTarget(_Strict):
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


class RunnerRule(_Strict):
    hosts: str
    # Exactly one target. Another kind (``ssm``) is one more optional field here and one
    # more branch in ``build_runner``; the check below counts every field but ``hosts``.
    local: LocalTarget | None = None
    ssh: SshTarget | None = None
    ssm: SsmTarget | None = None  # instances by id, through the generated SSM documents

    @field_validator("hosts")
    @classmethod
    def _glob(cls, value: str) -> str:
        if not _GLOB.fullmatch(value):
            raise ValueError("must be a glob of host-name characters and * ? [ ]")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "RunnerRule":
        kinds = [name for name in type(self).model_fields if name != "hosts"]
        given = [name for name in kinds if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(kinds)} (got {', '.join(given) or 'none'})")
        return self

    def matches(self, host: str) -> bool:
        return fnmatch.fnmatchcase(host, self.hosts)


class RunnersConfig(_Strict):
    runners: list[RunnerRule]

    @classmethod
    def load(cls, path: str | Path) -> "RunnersConfig":
        """The runners file, or ``ReviewedFileError`` (a ValueError) with every problem at its line."""
        path = Path(path)
        return load_reviewed(path, cls, what="the runners format", context={"base_dir": path.resolve().parent})

    @classmethod
    def parse(cls, data: Any, source: str = "<runners>", base_dir: Path | None = None) -> "RunnersConfig":
        try:
            return cls.model_validate(data, context={"base_dir": base_dir})
        except ValidationError as exc:
            problems = "; ".join(f"{_dotted(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors())
            raise ValueError(f"{source}: {problems}") from None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


class RoutingRunner:
    """A ``CommandRunner`` that hands each command to the first rule matching its host."""

    def __init__(self, rules: Sequence[tuple[str, CommandRunner]]):
        for pattern, _ in rules:
            if not _GLOB.fullmatch(pattern):
                raise ValueError(f"bad host glob {pattern!r}")
        self._rules = list(rules)

    def runner_for(self, host: str) -> CommandRunner:
        check_host(host)  # before matching: a hostile label never reaches a glob or a runner
        for pattern, runner in self._rules:
            if fnmatch.fnmatchcase(host, pattern):
                return runner
        raise UnreachableHost(f"no runner is configured for host {host!r}")

    async def run(self, host: str, argv: Sequence[str], timeout: float = 60.0, privileged: bool = False) -> CommandResult:
        return await self.runner_for(host).run(host, argv, timeout=timeout, privileged=privileged)

    async def close(self) -> None:
        for _, runner in self._rules:
            close = getattr(runner, "close", None)
            if close is not None:
                await close()


def build_runner(config: RunnersConfig, loaded=None, aws=None) -> RoutingRunner:
    """The runner for a config. SSM rules need the loaded whitelist (which units have
    documents) and the worker's AWS clients."""
    rules: list[tuple[str, CommandRunner]] = []
    for rule in config.runners:
        if rule.local is not None:
            rules.append((rule.hosts, LocalRunner(rule.local.prefix, privileged_prefix=rule.local.privileged_prefix)))
        elif rule.ssh is not None:
            # Imported here so a worker without SSH rules never loads asyncssh.
            from selfheal.activities.ssh_runner import SshRunner

            rules.append((rule.hosts, SshRunner(rule.ssh)))
        elif rule.ssm is not None:
            from selfheal.activities.ssm_runner import SsmRunner

            if loaded is None or aws is None:
                raise ValueError(f"rule for {rule.hosts!r}: an SSM runner needs the whitelist and AWS clients")
            rules.append((rule.hosts, SsmRunner(rule.ssm, loaded, aws)))
        else:  # unreachable: RunnerRule validates exactly one target
            raise ValueError(f"rule for {rule.hosts!r} has no target")
    return RoutingRunner(rules)
