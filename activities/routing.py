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
import re
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError, field_validator, model_validator

from selfheal.activities.runner import CommandResult, CommandRunner, LocalRunner, UnreachableHost
from selfheal.activities.targets import LocalTarget, SshTarget, Strict, check_host
from selfheal.activities.ssm_runner import SsmTarget
from selfheal.whitelist.reviewed import load_reviewed

_GLOB = re.compile(r"[A-Za-z0-9_.\-*?\[\]]+")


class RunnerRule(Strict):
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


class RunnersConfig(Strict):
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
