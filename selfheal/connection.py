"""How the worker, the ingress and the CLI reach Temporal: the way the ``temporal`` CLI does.

The SDK's environment configuration (``temporalio.envconfig``) reads the same TOML
profiles (``TEMPORAL_CONFIG_FILE``, ``TEMPORAL_PROFILE``) and the same ``TEMPORAL_*``
variables as the CLI: address, namespace, API key, TLS client certificate and key,
server CA, server name, gRPC metadata. Flags override them. One thing is added for
secrets kept in files (systemd credentials, Kubernetes secrets): ``TEMPORAL_API_KEY_FILE``.

Nothing here reads ``os.environ`` by itself: callers pass the mapping, so ``selfheal
dev`` can pass none and never follow a user's default profile to production.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from selfheal.secrets import SecretFileError, read_secret_files

DEFAULT_ADDRESS = "localhost:7233"
# The one place the task queue's default name is written: here, not in selfheal.settings,
# so the CLI can name it in --help without importing the settings' models.
TASK_QUEUE = "selfheal"
DEFAULT_NAMESPACE = "default"
# A query is answered by a worker. With none polling the workflow's task queue (the worker
# is down: when people most need to read) Temporal holds it for 30 s; whoever waits (a
# terminal, an HTTP sender) is told sooner. Long enough for a busy worker that must replay
# the workflow first.
QUERY_TIMEOUT = timedelta(seconds=10)


class ConnectionProblem(ValueError):
    """The connection settings cannot work (a missing certificate, an unreadable key file)."""


@dataclass(frozen=True)
class Overrides:
    """What flags say; None leaves the profile's or the environment's value."""

    address: str | None = None
    namespace: str | None = None
    profile: str | None = None
    config_file: str | None = None
    api_key: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_server_name: str | None = None


def from_address(address: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """A plain connection (no TLS, no key): the embedded dev server, tests."""
    return {"target_host": address, "namespace": namespace}


def connect_config(env: Mapping[str, str] | None, flags: Overrides = Overrides()) -> dict[str, Any]:
    """Keyword arguments for ``Client.connect``: the profile, then ``TEMPORAL_*``, then flags.

    ``env`` None: no environment and no config file at all (what ``selfheal dev`` uses
    unless it is given a profile); the flags alone, on top of the defaults.
    """
    from temporalio.envconfig import ClientConfig

    try:
        variables = read_secret_files({k: v for k, v in (env or {}).items() if k.startswith("TEMPORAL_")}, ["TEMPORAL_API_KEY"])
    except SecretFileError as exc:
        raise ConnectionProblem(str(exc)) from None
    if flags.config_file:
        variables["TEMPORAL_CONFIG_FILE"] = flags.config_file
    for name, value in (("TEMPORAL_TLS_CLIENT_CERT_PATH", flags.tls_cert), ("TEMPORAL_TLS_CLIENT_KEY_PATH", flags.tls_key),
                        ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", flags.tls_ca), ("TEMPORAL_TLS_SERVER_NAME", flags.tls_server_name),
                        ("TEMPORAL_API_KEY", flags.api_key)):
        if value:
            variables[name] = value
    # The SDK's loader treats a config file that is not there as no file at all, and would
    # fall back to localhost: a named file that is missing is a mistake, so say so.
    for name in ("TEMPORAL_CONFIG_FILE", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
                 "TEMPORAL_TLS_SERVER_CA_CERT_PATH"):
        if variables.get(name) and not Path(variables[name]).is_file():
            raise ConnectionProblem(f"{name}: no such file: {variables[name]}")
    try:
        config = dict(ClientConfig.load_client_connect_config(
            profile=flags.profile or variables.get("TEMPORAL_PROFILE"),
            disable_file=env is None and not flags.config_file and not flags.profile,
            override_env_vars=variables))
    except Exception as exc:  # the SDK's loader raises plain errors for bad TOML, unknown profiles, unreadable files
        raise ConnectionProblem(f"Temporal connection settings: {exc}") from None
    if flags.address:
        config["target_host"] = flags.address
    if flags.namespace:
        config["namespace"] = flags.namespace
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


def describe(config: Mapping[str, Any]) -> str:
    """Where and how, for logs and errors: never the key or certificate itself."""
    how = []
    tls = config.get("tls")
    if tls is True:
        how.append("TLS")
    elif tls:
        how.append("mutual TLS" if getattr(tls, "client_cert", None) else "TLS")
    if config.get("api_key"):
        how.append("API key")
    return f"{config['target_host']} namespace {config['namespace']}" + (f" ({', '.join(how)})" if how else "")


async def connect(config: Mapping[str, Any], **extra):
    """A client with selfheal's data converter; a failure says where it tried and why."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    try:
        return await Client.connect(**{**config, "data_converter": pydantic_data_converter, **extra})
    except RuntimeError as exc:  # the SDK's core reports connection failures as RuntimeError
        raise ConnectionProblem(f"cannot reach Temporal at {describe(config)}: {_why(exc)}\n"
                                "Is it running? `selfheal dev` starts one here; point elsewhere with --address and "
                                "--namespace, TEMPORAL_ADDRESS, or a profile (TEMPORAL_PROFILE).") from None


def _why(exc: Exception) -> str:
    """The SDK's reason. A plain transport failure (nothing listening, no route, a name
    that does not resolve) is said in words instead of the transport's nested debug repr;
    anything else, such as what a TLS front or the server answered, is kept as it is."""
    text = str(exc)
    if "tcp connect error" in text or "transport error" in text.lower():
        for known, words in (("Connection refused", "connection refused"), ("No route to host", "no route to host"),
                             ("dns error", "the host name does not resolve"), ("timed out", "timed out")):
            if known.lower() in text.lower():
                return words
    return text[:500]
