"""SELFHEAL_DIAGNOSER and SELFHEAL_LLM_*: read the same way by the worker and selfheal dev."""

import pytest

from selfheal.settings import WorkerSettings


def test_rules_is_the_default_and_llm_needs_a_model():
    assert WorkerSettings.from_mapping({}).incident.diagnoser == "rules"
    with pytest.raises(ValueError, match="SELFHEAL_DIAGNOSER=llm needs a model"):
        WorkerSettings.from_mapping({"SELFHEAL_DIAGNOSER": "llm"})
    settings = WorkerSettings.from_mapping({"SELFHEAL_DIAGNOSER": "llm", "SELFHEAL_LLM_PROVIDER": "anthropic",
                                            "SELFHEAL_LLM_MODEL": "claude-x", "SELFHEAL_LLM_API_KEY": "sk-secret"})
    assert settings.incident.diagnoser == "llm" and settings.llm.provider == "anthropic"
    assert settings.llm.base_url == "https://api.anthropic.com"
    assert "sk-secret" not in repr(settings)
    with pytest.raises(ValueError):
        WorkerSettings.from_mapping({"SELFHEAL_DIAGNOSER": "oracle"})


@pytest.mark.slow  # starts selfheal dev's Temporal server and moto
def test_selfheal_dev_takes_the_diagnoser_from_the_environment_and_nothing_else(monkeypatch, tmp_path):
    """The dev stack reads SELFHEAL_DIAGNOSER and SELFHEAL_LLM_* like a worker, and ignores a
    TEMPORAL_* profile, which must never point the demo at another cluster."""
    import asyncio

    from selfheal import dev

    seen = {}

    async def fake_run_worker(settings, stop=None, aws=None):  # records what the worker would get
        seen["settings"] = settings
        raise RuntimeError("stop here")

    monkeypatch.setenv("SELFHEAL_DIAGNOSER", "llm")
    monkeypatch.setenv("SELFHEAL_LLM_PROVIDER", "openai")
    monkeypatch.setenv("SELFHEAL_LLM_MODEL", "m")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "production")
    monkeypatch.setattr(dev.worker, "run_worker", fake_run_worker)
    opts = dev.DevOptions(data_dir=tmp_path, temporal_port=_free(), ui_port=_free(), ingress_port=_free(), aws_port=_free())
    with pytest.raises(RuntimeError, match="stop here"):
        asyncio.run(dev.run_dev(opts))
    settings = seen["settings"]
    assert settings.incident.diagnoser == "llm" and settings.llm.model == "m"
    assert settings.namespace == "default" and settings.evidence == "deploy/demo/evidence.yaml"


def _free() -> int:
    from tests.support.ports import free_port

    return free_port()


def test_the_agents_turn_bound_follows_the_models_token_limit():
    env = {"SELFHEAL_DIAGNOSER": "llm", "SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m",
           "SELFHEAL_LLM_MAX_TOKENS": "2048"}
    derived = WorkerSettings.from_mapping(env)
    assert derived.incident.agent.turn_timeout_seconds == derived.llm.turn_timeout >= 8 * 60
    assert WorkerSettings.from_mapping({**env, "SELFHEAL_LLM_TIMEOUT": "90"}).incident.agent.turn_timeout_seconds == 90


async def test_a_worker_whose_model_does_not_answer_says_so_loudly_and_in_a_metric(caplog):
    import logging
    from tests.support.ports import free_port

    import httpx

    from selfheal.metrics import SdkMetrics
    from selfheal.worker import probe_model

    port = free_port()  # a port nobody listens on
    settings = WorkerSettings.from_mapping({"SELFHEAL_DIAGNOSER": "llm", "SELFHEAL_LLM_PROVIDER": "openai",
                                            "SELFHEAL_LLM_MODEL": "m", "SELFHEAL_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1"})
    metrics = SdkMetrics()
    with caplog.at_level(logging.INFO, "selfheal.worker"):
        async with httpx.AsyncClient() as http:
            problem = await probe_model(settings, http, metrics)
    assert problem and "does not answer" in problem
    [record] = [r for r in caplog.records if "start-up probe" in r.getMessage()]
    assert record.levelno == logging.ERROR and "Serving anyway" in record.getMessage()
    assert metrics.registry.get_sample_value("selfheal_model_up") == 0
