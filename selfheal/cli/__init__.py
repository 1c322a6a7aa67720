"""The ``selfheal`` command line: thin adapters that parse, call, and render."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from selfheal.cli import governor as cli_governor, grants as cli_grants, incidents as cli_incidents, replay as cli_replay, review as cli_review, whitelist_check as cli_whitelist_check, whitelist_diff as cli_whitelist_diff, whitelist_lint as cli_whitelist_lint, whitelist_test as cli_whitelist_test

# Locals stay out of a traceback: they hold tokens, keys and alert text.
app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-healing, not self-governing.",
                  pretty_exceptions_show_locals=False)


@app.callback()
def _everywhere(debug: bool = typer.Option(
        False, "--debug", envvar="SELFHEAL_DEBUG",
        help="an expected failure (unreachable Temporal, a refused call) shows its traceback too")) -> None:
    if debug:  # read where failures are explained (selfheal.cli.common.debugging); processes started inherit it
        os.environ["SELFHEAL_DEBUG"] = "1"

whitelist_app = typer.Typer(no_args_is_help=True, help="Check, explain, lint, test and compare whitelist files; print the grants they need.")
app.add_typer(whitelist_app, name="whitelist")

# Piped output is read by scripts and CI logs, not a narrow terminal: don't truncate ids.
out = Console() if sys.stdout.isatty() else Console(width=200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


# How to reach Temporal, named as the temporal CLI names them; each sets the TEMPORAL_*
# variable the SDK's environment configuration reads (selfheal.connection), so a flag
# overrides the variable, which overrides the profile.
CONNECTION_FLAGS = {
    "profile": ("TEMPORAL_PROFILE", "--profile", "profile in the Temporal config file (default: default)"),
    "config_file": ("TEMPORAL_CONFIG_FILE", "--config-file", "Temporal config file (TOML, as the temporal CLI's)"),
    "tls_cert_path": ("TEMPORAL_TLS_CLIENT_CERT_PATH", "--tls-cert-path", "client certificate (PEM) for mutual TLS"),
    "tls_key_path": ("TEMPORAL_TLS_CLIENT_KEY_PATH", "--tls-key-path", "client key (PEM) for mutual TLS"),
    "tls_ca_path": ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "--tls-ca-path", "CA certificate (PEM) the server's must chain to"),
    "tls_server_name": ("TEMPORAL_TLS_SERVER_NAME", "--tls-server-name", "server name to verify (SNI)"),
    "api_key_file": ("TEMPORAL_API_KEY_FILE", "--api-key-file", "file holding the API key (Temporal Cloud)"),
}


def connection_option(name: str):
    variable, flag, text = CONNECTION_FLAGS[name]
    return typer.Option(None, flag, envvar=variable, help=text)


def connection_env(env: dict[str, str], **given) -> dict[str, str]:
    """``env`` with the connection flags that were given set as their TEMPORAL_* variables."""
    for name, value in given.items():
        if value is not None:
            env[CONNECTION_FLAGS[name][0]] = str(value)
    return env


@app.command("worker")
def worker_command(
    address: str = typer.Option(None, envvar="TEMPORAL_ADDRESS", help="Temporal frontend host:port (default localhost:7233)"),
    namespace: str = typer.Option(None, envvar="TEMPORAL_NAMESPACE", help="Temporal namespace (default: default)"),
    task_queue: str = typer.Option(None, envvar="SELFHEAL_TASK_QUEUE", help="task queue (default selfheal)"),
    whitelist: Path = typer.Option(None, envvar="SELFHEAL_WHITELIST", help="whitelist file (default deploy/demo/whitelist.yaml)"),
    diagnosis: Path = typer.Option(None, envvar="SELFHEAL_DIAGNOSIS", help="diagnosis rules (default deploy/demo/diagnosis.yaml)"),
    notify_url: str = typer.Option(None, envvar="SELFHEAL_NOTIFY_URL", help="webhook for approval requests and escalations"),
    pagerduty_url: str = typer.Option(None, "--pagerduty-url", envvar="SELFHEAL_PAGERDUTY_URL",
                                      help="PagerDuty Events API v2 endpoint (the key: SELFHEAL_PAGERDUTY_ROUTING_KEY)"),
    runners: Path = typer.Option(None, envvar="SELFHEAL_RUNNERS", help="which runner (local, ssh, ssm) reaches which host"),
    aws_endpoint_url: str = typer.Option(None, envvar="SELFHEAL_AWS_ENDPOINT_URL", help="send every AWS call here (a local simulation)"),
    diagnoser: str = typer.Option(None, envvar="SELFHEAL_DIAGNOSER", help="rules (default) or llm (SELFHEAL_LLM_* name the model)"),
    evidence: Path = typer.Option(None, envvar="SELFHEAL_EVIDENCE", help="the reviewed evidence configuration"),
    redact_patterns: Path = typer.Option(None, envvar="SELFHEAL_REDACT_PATTERNS", help="more redaction patterns (YAML)"),
    metrics_address: str = typer.Option(None, "--metrics-address", envvar="SELFHEAL_METRICS_ADDRESS",
                                        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)"),
    profile: str = connection_option("profile"),
    config_file: Path = connection_option("config_file"),
    tls_cert_path: Path = connection_option("tls_cert_path"),
    tls_key_path: Path = connection_option("tls_key_path"),
    tls_ca_path: Path = connection_option("tls_ca_path"),
    tls_server_name: str = connection_option("tls_server_name"),
    api_key_file: Path = connection_option("api_key_file"),
) -> None:
    """Run a worker: load and check the whitelist, then execute incidents until SIGTERM."""
    import os

    from selfheal import worker
    from selfheal.whitelist import WhitelistError

    env = connection_env(dict(os.environ), profile=profile, config_file=config_file, tls_cert_path=tls_cert_path,
                         tls_key_path=tls_key_path, tls_ca_path=tls_ca_path, tls_server_name=tls_server_name,
                         api_key_file=api_key_file)
    for key, value in [
        ("TEMPORAL_ADDRESS", address), ("TEMPORAL_NAMESPACE", namespace), ("SELFHEAL_TASK_QUEUE", task_queue),
        ("SELFHEAL_WHITELIST", whitelist), ("SELFHEAL_DIAGNOSIS", diagnosis), ("SELFHEAL_NOTIFY_URL", notify_url),
        ("SELFHEAL_PAGERDUTY_URL", pagerduty_url), ("SELFHEAL_RUNNERS", runners), ("SELFHEAL_AWS_ENDPOINT_URL", aws_endpoint_url),
        ("SELFHEAL_DIAGNOSER", diagnoser), ("SELFHEAL_EVIDENCE", evidence), ("SELFHEAL_REDACT_PATTERNS", redact_patterns),
        ("SELFHEAL_METRICS_ADDRESS", metrics_address),
    ]:
        if value is not None:
            env[key] = str(value)
    try:
        worker.main(env=env)
        _leave()
    except WhitelistError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        err.print("refusing to start: the whitelist is invalid", markup=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"refusing to start: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@app.command("dev")
def dev_command(
    data_dir: Path = typer.Option(Path(".selfheal"), "--data-dir", help="where the SQLite database and logs live"),
    host: str = typer.Option("127.0.0.1", help="address to bind every port to"),
    temporal_port: int = typer.Option(7233, help="Temporal frontend port"),
    ui_port: int = typer.Option(8233, help="Temporal Web UI port"),
    ingress_port: int = typer.Option(8080, help="webhook ingress port"),
    aws_port: int = typer.Option(5566, help="port of the local AWS simulation (moto_server; never real AWS)"),
    metrics_port: int = typer.Option(9233, help="the worker's /metrics port (taken: the demo runs without it)"),
    whitelist: Path = typer.Option(Path("deploy/demo/whitelist.yaml"), help="whitelist file"),
    diagnosis: Path = typer.Option(Path("deploy/demo/diagnosis.yaml"), help="diagnosis rules"),
    token: str = typer.Option(None, envvar="SELFHEAL_DEV_TOKEN", help="bearer token for the ingress (default: random)"),
    temporal_profile: str = typer.Option(
        None, "--temporal-profile",
        help="run the demo against this profile of the Temporal config file instead of the embedded server "
             "(without it, dev reads no TEMPORAL_* variable or profile)"),
) -> None:
    """Run the embedded stack: Temporal dev server + Web UI, a worker, and the ingress."""
    from selfheal import dev
    from selfheal.whitelist import WhitelistError

    opts = dev.DevOptions(data_dir=data_dir, host=host, temporal_port=temporal_port, ui_port=ui_port,
                          ingress_port=ingress_port, aws_port=aws_port, metrics_port=metrics_port, whitelist=str(whitelist),
                          diagnosis=str(diagnosis), token=token, temporal_profile=temporal_profile)
    try:
        dev.main(opts)
        _leave()
    except dev.PortInUse as exc:  # expected: one line that says what to do, not a traceback
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except WhitelistError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("ingress")
def ingress_command(
    host: str = typer.Option("127.0.0.1", envvar="SELFHEAL_INGRESS_HOST"),
    port: int = typer.Option(8080, envvar="SELFHEAL_INGRESS_PORT"),
    address: str = typer.Option(None, envvar="TEMPORAL_ADDRESS", help="Temporal frontend host:port (default localhost:7233)"),
    namespace: str = typer.Option(None, envvar="TEMPORAL_NAMESPACE", help="Temporal namespace (default: default)"),
    task_queue: str = typer.Option("selfheal", envvar="SELFHEAL_TASK_QUEUE"),
    profile: str = connection_option("profile"),
    config_file: Path = connection_option("config_file"),
    tls_cert_path: Path = connection_option("tls_cert_path"),
    tls_key_path: Path = connection_option("tls_key_path"),
    tls_ca_path: Path = connection_option("tls_ca_path"),
    tls_server_name: str = connection_option("tls_server_name"),
    api_key_file: Path = connection_option("api_key_file"),
) -> None:
    """Serve the webhook ingress (credentials from SELFHEAL_INGRESS_<SOURCE>_TOKEN / _HMAC_SECRET, or their _FILE)."""
    import asyncio
    import os
    import signal

    import httpx

    from selfheal.connection import Overrides, connect_config
    from selfheal.ingress.server import build, server
    from selfheal.ingress.settings import IngressSettings

    env = connection_env(dict(os.environ), profile=profile, config_file=config_file, tls_cert_path=tls_cert_path,
                         tls_key_path=tls_key_path, tls_ca_path=tls_ca_path, tls_server_name=tls_server_name,
                         api_key_file=api_key_file)
    try:
        temporal = connect_config(env, Overrides(address=address, namespace=namespace))
        settings = IngressSettings.from_mapping(env, namespace=temporal["namespace"])
    except ValueError as exc:
        err.print(f"refusing to start: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None

    async def serve() -> None:
        async with httpx.AsyncClient() as http:
            srv = server(await build(settings, temporal, task_queue, http), host, port)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: setattr(srv, "should_exit", True))
            await srv.serve()

    asyncio.run(serve())
    _leave()


cli_incidents.register(app, out, err)
cli_whitelist_check.register(whitelist_app, out, err)
cli_grants.register(whitelist_app, lambda path: cli_whitelist_check.load_or_exit(path, err), out, err)
cli_whitelist_diff.register(whitelist_app, out, err)
cli_whitelist_lint.register(whitelist_app, out, err)
cli_whitelist_test.register(whitelist_app, out, err)
cli_governor.register(app, out, err)
cli_replay.register(app, out, err)
cli_review.register(app, out, err)


# Set by ``main``, the process's entry point (the ``selfheal`` script, ``python -m
# selfheal.cli``); an in-process runner (tests) calls the app directly and never leaves.
_PROCESS = {"entry": False}


def _leave(code: int = 0) -> None:
    """End the process once a command has finished cleanly, skipping the interpreter's
    finalization. The Temporal SDK's Rust core keeps native threads that can
    still call into Python (log forwarding, metrics) while the interpreter finalizes, and
    about one graceful SIGTERM in eight then died with SIGABRT ("Fatal Python error:
    PyGILState_Release: thread state ... must be current when releasing; Python runtime
    state: finalizing", seen through faulthandler). Everything that matters is done by
    now: activities finished or handed back, logs flushed here."""
    if not _PROCESS["entry"]:
        return
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    _PROCESS["entry"] = True
    try:
        app(prog_name="selfheal")
    except SystemExit as exc:
        # Every command leaves the same way: a Temporal client's native threads can crash
        # the interpreter's finalization after any command that used one (a segfault after
        # `selfheal approve` printed its answer was seen under load).
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        _leave(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        raise
    _leave()


if __name__ == "__main__":
    sys.exit(main())
