"""The selfheal worker: the one place that builds clients, reads settings and registers code.

About 300 lines on purpose: everything the worker process wires together is here, so
nothing else builds a client or registers code.

Run it as ``selfheal worker`` (or ``python worker.py`` from a checkout). It refuses to start with an
invalid whitelist, and on SIGTERM or SIGINT it stops polling, lets running activities
finish (up to the graceful shutdown timeout) and exits. With ``metrics_address`` it serves
Prometheus metrics at ``http://HOST:PORT/metrics`` (``selfheal.metrics``).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Sequence

import httpx
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from selfheal.activities.aws_clients import AwsClients
from selfheal.activities.aws_evidence import AwsEvidence
from selfheal.activities.aws_remediate import AwsRemediator
from selfheal.activities.diagnose import DiagnosisRules, RuleDiagnoser, load_rules
from selfheal.activities.evidence import EvidenceReader
from selfheal.activities.governor import BrakeReader, GovernorActivities, announce_whitelist
from selfheal.activities.notify import Webhook, activity_of
from selfheal.activities.notify_pagerduty import PagerDuty
from selfheal.activities.notify_slack import Slack
from selfheal.activities.policy import PolicyActivities
from selfheal.activities.remediate import SystemdRemediator
from selfheal.activities.runner import CommandRunner, LocalRunner
from selfheal.activities.verify import Verifier
from selfheal import connection, search
from selfheal.codec_free_runner import CodecFreeRunner
from selfheal.current_whitelist import CurrentWhitelist
from selfheal.metrics import GovernorCollector, SdkMetrics, serve
from selfheal.evidence.redact import RedactionConfig, Redactor
from selfheal.settings import WorkerSettings
from selfheal.whitelist import load_whitelist
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.workflows.incident import IncidentWorkflow
from selfheal.workflows.diagnosis_agent import DiagnosisAgentWorkflow
from selfheal.workflows.drill import DrillWorkflow
from selfheal.workflows.entry_governor import EntryGovernorWorkflow
from selfheal.contract.governor import Governor, GovernorStatus, governor_id, governor_queue
from selfheal.workflows.governor import GovernorWorkflow

log = logging.getLogger("selfheal.worker")
WORKFLOWS = [IncidentWorkflow, GovernorWorkflow, EntryGovernorWorkflow, DiagnosisAgentWorkflow, DrillWorkflow]
GOVERNORS = [GovernorWorkflow, EntryGovernorWorkflow]
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
HEARTBEAT_THROTTLE = timedelta(seconds=1)
# The sandbox still refuses non-deterministic calls (clocks, randomness, I/O) inside a
# workflow; it just does not re-import modules for every workflow run. Re-importing cost
# about 80 KB and an import per incident, most of a worker's memory with 1,000 incidents
# waiting (bench/approve_many.py). Safe here because the workflow modules import only the
# standard library, temporalio and selfheal modules without import-time side effects or
# mutable module state (a test checks the latter).
WORKFLOW_RUNNER = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())
# The stricter default, which re-imports modules per run, still needs these passed
# through: cryptography's native bindings cannot load inside the sandbox, and sshsig
# imports parts of cryptography lazily, while a workflow checks a signature.
STRICT_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "sshsig"))


async def connect(settings: WorkerSettings, runtime: Runtime | None = None) -> Client:
    """A client; ``runtime`` (one per process) is where its workers' metrics go, else the SDK's default.
    A connection that cannot work (no client certificate, a refused key) raises
    ``ConnectionProblem`` saying where it tried and why."""
    config = settings.temporal or connection.from_address(settings.address, settings.namespace)
    log.info("connecting to Temporal at %s", connection.describe(config))
    return await connection.connect(config, **({"runtime": runtime} if runtime else {}))


def _slack(settings: WorkerSettings, http: httpx.AsyncClient):
    from selfheal.slack import SlackApi

    return SlackApi(settings.slack_token, settings.slack_api_url, http) if settings.slack_token else None


def build_activities(
    settings: WorkerSettings, loaded: LoadedWhitelist, rules: DiagnosisRules, client: Client, runner: CommandRunner,
    http: httpx.AsyncClient, search_attributes: bool = False, aws: AwsClients | None = None,
) -> list:
    aws = aws or AwsClients(settings.aws_endpoint_url)
    redactor = _redactor(settings)
    aws_evidence = AwsEvidence(aws, loaded)
    sources, catalog = _evidence(settings, runner, http, aws_evidence, redactor)
    slack = _slack(settings, http)
    notifiers = [Webhook(http, settings.notify_url), *([Slack(slack, settings.slack_channel)] if slack and settings.slack_channel else []),
                 PagerDuty(http, settings.pagerduty_routing_key, settings.pagerduty_url, settings.ui_url, settings.namespace)]
    policy = PolicyActivities(loaded, settings.incident, search_attributes, catalog,
                              notifiers=tuple(n.name for n in notifiers if n.name != "pagerduty"),
                              routing_key=bool(settings.pagerduty_routing_key),
                              page_automatic=settings.pagerduty_page_automatic)
    governor = GovernorActivities(loaded, client, settings.task_queue)
    brake = BrakeReader(client, settings.task_queue)
    evidence = EvidenceReader(runner, loaded)
    agent = []
    if settings.llm is not None:
        from selfheal.activities.agent import ModelTurns
        from selfheal.activities.llm import client_for

        agent.append(ModelTurns(client_for(settings.llm, http), redactor).model_turn)
    if sources is not None:
        agent.append(sources.read_evidence)
    return [
        *agent,
        policy.load_policy,
        governor.assess_action,
        governor.reserve_action,
        governor.record_outcome,
        RuleDiagnoser(rules, runner, aws_evidence, redactor).diagnose,
        evidence.read_unit_state,
        SystemdRemediator(runner, loaded, brake).restart_unit,
        *AwsRemediator(aws, loaded, brake).activities(),
        aws_evidence.read_aws_evidence,
        Verifier(runner, http, loaded, aws).verify_remediation,
        *(activity_of(n, redactor) for n in notifiers),
    ]


async def run_worker(
    settings: WorkerSettings, runner: CommandRunner | None = None, stop: asyncio.Event | None = None,
    workflows: Sequence[type] = WORKFLOWS, aws: AwsClients | None = None, metrics: SdkMetrics | None = None,
    reload: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set; each time ``reload`` is set (SIGHUP), load the whitelist again."""
    # Raises WhitelistError: never start on a bad whitelist. SIGHUP (``reload``) loads it again.
    loaded = CurrentWhitelist(load_whitelist(settings.whitelist))
    log.info("whitelist %s sha256 %s: %d entries", loaded.path, loaded.sha256, len(loaded.whitelist.entries))
    rules = load_rules(settings.diagnosis)  # likewise: broken diagnosis rules stop the start
    aws = aws or AwsClients(settings.aws_endpoint_url)
    runner = runner or _runner(settings, loaded, aws)  # and a broken runners file
    _redactor(settings)  # and broken redaction patterns
    if settings.evidence:  # and a broken evidence configuration
        from selfheal.evidence.config import EvidenceConfig

        EvidenceConfig.load(settings.evidence)
    if settings.metrics_address and metrics is None:
        metrics = SdkMetrics()  # the process's one metrics runtime: run_worker runs once per process
    client = await connect(settings, metrics.runtime if metrics else None)
    attributes = await search.available(client, settings.namespace)
    if not attributes:
        log.warning("search attributes %s are not registered in %s; incidents will not be filterable by them",
                    ", ".join(k.name for k in search.ALL), settings.namespace)
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient())
        if metrics is not None:
            await _export(stack, metrics, client, settings)
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=list(workflows),
            workflow_runner=CodecFreeRunner.for_converter(client.data_converter, WORKFLOW_RUNNER),
            activities=build_activities(
                settings, loaded, rules, client, runner, http, attributes, aws
            ),
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            # A workflow's next task goes to the worker that has it cached. If that worker
            # was killed, Temporal waits this long before giving the task to any worker:
            # the SDK's 10 s would add itself to every recovery.
            sticky_queue_schedule_to_start_timeout=settings.sticky_timeout,
            max_cached_workflows=settings.max_cached_workflows,
            # Send heartbeats every second rather than every 0.8 x the timeout: with a 5 s
            # heartbeat timeout, a live worker keeps 4 s of margin instead of 1.
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        )
        async with worker, governor_worker(client, settings.task_queue, settings.max_cached_workflows,
                                               settings.sticky_timeout):
            log.info("worker polling %s and %s on %s/%s", settings.task_queue, governor_queue(settings.task_queue),
                     settings.address, settings.namespace)
            # After polling starts: the governor's update runs on the governors' queue this worker polls.
            configured = asyncio.create_task(announce_whitelist(client, settings.task_queue, loaded.get()))
            configured.add_done_callback(_report_configured)
            if settings.llm is not None and settings.incident.diagnoser == "llm":
                probing = asyncio.create_task(probe_model(settings, http, metrics))  # noqa: F841 - held until stop
            reload = reload or asyncio.Event()
            while not stop.is_set():
                await _first(stop, reload)
                if reload.is_set() and not stop.is_set():
                    reload.clear()
                    if loaded.reload():  # the governor adopts it unless it holds a newer revision
                        configured = asyncio.create_task(announce_whitelist(client, settings.task_queue, loaded.get()))
                        configured.add_done_callback(_report_configured)
            log.info("stopping: finishing running activities")


def governor_worker(client: Client, task_queue: str,
                    max_cached_workflows: int = WorkerSettings.model_fields["max_cached_workflows"].default,
                    sticky_timeout: timedelta = WorkerSettings.model_fields["sticky_timeout"].default) -> Worker:
    """The deployment's governors, polled on a queue of their own (``governor_queue``) beside
    the incidents': a decision does not wait behind incidents' workflow tasks, and a burst
    of incidents does not evict a governor from this worker's cache (each worker has a
    cache of its own; governors are one per entry that decided, and one more)."""
    return Worker(client, task_queue=governor_queue(task_queue), workflows=GOVERNORS,
                  workflow_runner=CodecFreeRunner.for_converter(client.data_converter, WORKFLOW_RUNNER),
                  graceful_shutdown_timeout=GRACEFUL_SHUTDOWN, max_cached_workflows=max_cached_workflows,
                  sticky_queue_schedule_to_start_timeout=sticky_timeout)


async def _export(stack: AsyncExitStack, metrics: SdkMetrics, client: Client, settings: WorkerSettings) -> None:
    """Drain the SDK's metrics every second, read the governor at scrape time, serve /metrics."""

    async def governor_status() -> GovernorStatus:
        handle = client.get_workflow_handle(governor_id(settings.task_queue))
        return await handle.query(Governor.STATUS, result_type=GovernorStatus)

    governor = GovernorCollector(governor_status, asyncio.get_running_loop())
    metrics.registry.register(governor)
    stack.callback(metrics.registry.unregister, governor)
    drain = asyncio.create_task(metrics.run())
    stack.push_async_callback(_cancelled, drain)
    if settings.metrics_address:
        server, _ = serve(metrics.registry, settings.metrics_address)  # ValueError (port in use) stops the start
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        log.info("metrics at http://%s:%d/metrics", server.server_address[0], server.server_address[1])


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def _evidence(settings: WorkerSettings, runner, http, aws_evidence, redactor):
    """The evidence sources and the catalog incidents record, or (None, None) without a config."""
    if not settings.evidence:
        return None, None
    from selfheal.activities.evidence_sources import EvidenceSources
    from selfheal.evidence.config import EvidenceConfig

    loaded = EvidenceConfig.load(settings.evidence)
    catalog = loaded.record()
    return EvidenceSources(loaded, runner, http, aws_evidence, redactor), catalog


def _redactor(settings: WorkerSettings) -> Redactor:
    if not settings.redact_patterns:
        return Redactor()
    return Redactor(RedactionConfig.load(settings.redact_patterns).patterns)


def _runner(settings: WorkerSettings, loaded: LoadedWhitelist, aws: AwsClients) -> CommandRunner:
    if not settings.runners:
        return LocalRunner(settings.command_prefix)
    from selfheal.activities.routing import RunnersConfig, build_runner

    return build_runner(RunnersConfig.load(settings.runners), loaded, aws)


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def probe_model(settings: WorkerSettings, http: httpx.AsyncClient, metrics: SdkMetrics | None) -> str | None:
    """Probe the model endpoint once at start and say so loudly when it does not answer.
    The worker serves anyway: incidents go on with the rules' diagnosis, whose proposals
    then need a person (the model could not confirm them)."""
    from prometheus_client import Gauge

    from selfheal.activities.llm import client_for

    problem = await client_for(settings.llm, http).probe()
    if problem:
        log.error("the model endpoint failed its start-up probe: %s. Serving anyway: incidents use the rules' "
                  "diagnosis, and what the rules propose waits for a person until the model answers", problem)
    else:
        log.info("model endpoint %s answers (%s %s)", settings.llm.base_url, settings.llm.provider, settings.llm.model)
    if metrics is not None:
        Gauge("selfheal_model_up", "1 when the model endpoint answered the worker's start-up probe, else 0",
              registry=metrics.registry).set(0 if problem else 1)
    return problem


def _report_configured(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        # Not fatal: the first reservation announces it if no worker has; pause and resume
        # wait for a whitelist until then.
        log.warning("could not announce this worker's whitelist to the governor: %s", task.exception())
    elif "older than" in task.result():
        log.warning("the governor kept a newer whitelist: %s", task.result())
    else:
        log.info("governor: %s", task.result())


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> None:
    # A fatal signal (SIGSEGV, SIGABRT from a native library) leaves every thread's Python
    # stack in the log instead of a bare exit code.
    try:
        faulthandler.enable()
    except (ValueError, OSError):  # stderr without a file descriptor (an in-process CLI runner)
        pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = WorkerSettings.from_mapping(env if env is not None else dict(os.environ))

    async def serve() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await run_worker(settings, stop=stop, reload=reload)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
