"""Settings, built once at start-up from an explicit mapping (the environment, or a test's dict).

Nothing here reads ``os.environ`` at import time; ``WorkerSettings.from_mapping``
takes the mapping it is given, as starlette's ``Config`` does.
"""

from __future__ import annotations

import shlex
from datetime import timedelta
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from selfheal.connection import TASK_QUEUE
from selfheal.contract.snapshot import IncidentSettings
from selfheal.whitelist.durations import PositiveDuration


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where the worker connects, for logs and for code that needs the namespace; the
    # connection itself (TLS, API key, profile) is ``temporal`` (selfheal.connection).
    address: str = "localhost:7233"
    namespace: str = "default"
    temporal: Any = None  # keyword arguments for Client.connect; None: address and namespace, plain
    task_queue: str = TASK_QUEUE
    whitelist: str = "deploy/demo/whitelist.yaml"
    diagnosis: str = "deploy/demo/diagnosis.yaml"
    notify_url: str | None = None
    # Put in front of every systemctl/journalctl, e.g. "sudo -n" or "env XDG_RUNTIME_DIR=/run/user/1000".
    command_prefix: list[str] = []
    # Which runner reaches which host (local, SSH with pinned host keys, SSM): a YAML file
    # (selfheal.activities.routing). Without it, only this machine is reachable.
    runners: str | None = None
    # More redaction patterns (selfheal.evidence.redact.RedactionConfig), on top of the built-in ones.
    redact_patterns: str | None = None
    # The reviewed evidence configuration (selfheal.evidence.config): which sources a
    # diagnosis may read, per entry or signature.
    evidence: str | None = None
    # The language model for SELFHEAL_DIAGNOSER=llm (activities.llm.LlmConfig, from SELFHEAL_LLM_*).
    llm: Any = None
    incident: IncidentSettings = IncidentSettings()
    # Slack: approval requests with buttons (the ingress answers the clicks).
    slack_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    # PagerDuty (Events API v2): the routing key only from the environment or a file, never
    # a flag (it would show in ps); the whitelist may name other variables per tier or entry.
    pagerduty_routing_key: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_page_automatic: bool = False  # page (and resolve) for automatic incidents that healed too
    ui_url: str | None = None  # the Temporal UI, for links in pages (as the ingress's SELFHEAL_UI_URL)
    # AWS: credentials come from boto3's standard chain, regions from the whitelist's
    # targets; this points every AWS client at another endpoint (the local simulation).
    aws_endpoint_url: str | None = None
    sticky_timeout: PositiveDuration = timedelta(seconds=3)
    # Workflows kept in memory between tasks; an evicted one is replayed from history when
    # it next has work. Waiting incidents are cheap to replay, so this bounds memory:
    # with 1,000 incidents waiting, 600 cached held the worker at 235 MB peak against
    # 300 MB for 1,000, at the same speed relative to the baseline (bench/approve_many.py).
    max_cached_workflows: int = Field(default=600, ge=0)
    # HOST:PORT to serve Prometheus metrics at /metrics (selfheal.metrics); None: no metrics.
    metrics_address: str | None = None

    @field_validator("metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            from selfheal.metrics import parse_address  # noqa: PLC0415 - prometheus-client only when asked for

            parse_address(value)
        return value

    @classmethod
    def from_mapping(cls, env: Mapping[str, str], **overrides) -> "WorkerSettings":
        """Read the Temporal connection as the temporal CLI does (``TEMPORAL_CONFIG_FILE``,
        ``TEMPORAL_PROFILE``, ``TEMPORAL_*``), then ``SELFHEAL_*``; every secret may come from
        ``NAME_FILE`` (``selfheal.secrets``)."""
        from selfheal.connection import Overrides, connect_config  # noqa: PLC0415
        from selfheal.secrets import read_secret_files  # noqa: PLC0415

        env = read_secret_files(env)
        # How to reach Temporal, as the temporal CLI reads it (profile, TEMPORAL_*), unless
        # the caller says (selfheal dev: its own server, never a user's profile).
        temporal = overrides.pop("temporal", None) or connect_config(
            env, Overrides(address=overrides.pop("address", None), namespace=overrides.pop("namespace", None)))
        values: dict = {"temporal": temporal, "address": temporal["target_host"], "namespace": temporal["namespace"]}
        for field, key in [
            ("task_queue", "SELFHEAL_TASK_QUEUE"),
            ("whitelist", "SELFHEAL_WHITELIST"),
            ("diagnosis", "SELFHEAL_DIAGNOSIS"),
            ("notify_url", "SELFHEAL_NOTIFY_URL"),
            ("runners", "SELFHEAL_RUNNERS"),
            ("redact_patterns", "SELFHEAL_REDACT_PATTERNS"),
            ("evidence", "SELFHEAL_EVIDENCE"),
        ]:
            if env.get(key):
                values[field] = env[key]
        for field, key in [("sticky_timeout", "SELFHEAL_STICKY_TIMEOUT"), ("max_cached_workflows", "SELFHEAL_MAX_CACHED_WORKFLOWS"),
                           ("slack_token", "SELFHEAL_SLACK_TOKEN"), ("slack_channel", "SELFHEAL_SLACK_CHANNEL"),
                           ("slack_api_url", "SELFHEAL_SLACK_API_URL"), ("aws_endpoint_url", "SELFHEAL_AWS_ENDPOINT_URL"),
                           ("metrics_address", "SELFHEAL_METRICS_ADDRESS"),
                           ("pagerduty_routing_key", "SELFHEAL_PAGERDUTY_ROUTING_KEY"),
                           ("pagerduty_url", "SELFHEAL_PAGERDUTY_URL"), ("ui_url", "SELFHEAL_UI_URL"),
                           ("pagerduty_page_automatic", "SELFHEAL_PAGERDUTY_PAGE_AUTOMATIC")]:
            if env.get(key):
                values[field] = env[key]
        if env.get("SELFHEAL_COMMAND_PREFIX"):
            values["command_prefix"] = shlex.split(env["SELFHEAL_COMMAND_PREFIX"])
        timers = {
            name: env[f"SELFHEAL_{name.upper()}"]
            for name in IncidentSettings.model_fields
            if env.get(f"SELFHEAL_{name.upper()}")
        }
        values["incident"] = IncidentSettings(**timers)
        from selfheal.activities.llm import LlmConfig  # noqa: PLC0415 - only the worker needs it

        values["llm"] = LlmConfig.from_env(env)
        if values["incident"].diagnoser == "llm" and values["llm"] is None:
            raise ValueError("SELFHEAL_DIAGNOSER=llm needs a model: set SELFHEAL_LLM_PROVIDER, SELFHEAL_LLM_MODEL "
                             "(and SELFHEAL_LLM_BASE_URL, SELFHEAL_LLM_API_KEY or SELFHEAL_LLM_API_KEY_FILE)")
        if values["llm"] is not None:  # the workflow's bound on a turn follows the client's own
            incident = values["incident"]
            values["incident"] = incident.model_copy(update={"agent": incident.agent.model_copy(
                update={"turn_timeout_seconds": values["llm"].turn_timeout})})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
