"""How selfheal reaches Temporal (selfheal/connection.py) and reads secrets from files
(selfheal/secrets.py), without a server: what ``Client.connect`` would be given, and every
refusal, which names the setting and never the secret.

The same paths against a real TLS front (nginx, mutual TLS, an API key) are in
tests/workflows/test_temporal_tls.py.
"""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from selfheal.cli import app
from selfheal.connection import ConnectionProblem, Overrides, connect_config, describe
from selfheal.ingress.settings import IngressSettings
from selfheal.secrets import MAX_SECRET_BYTES, SecretFileError, read_secret_files
from selfheal.settings import WorkerSettings

KEY = "tmprl-key-7c1e9a-never-shown"


@pytest.fixture(autouse=True)
def _no_outer_temporal_settings(monkeypatch, tmp_path):
    """Whatever this machine's environment or default profile says must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith(("TEMPORAL_", "SELFHEAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


@pytest.fixture
def pem(tmp_path):
    """Files where certificates go; connect_config reads them, only the server parses them."""

    def make(name: str) -> str:
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n")
        return str(path)

    return make


@pytest.fixture
def profile(tmp_path, pem):
    """A config file as the temporal CLI writes it, with a default and a TLS profile."""
    path = tmp_path / "temporal.toml"
    path.write_text(f"""
[profile.default]
address = "from-profile:7233"
namespace = "profile-ns"

[profile.cluster]
address = "cluster.example:7233"
namespace = "cluster-ns"

[profile.cluster.tls]
client_cert_path = "{pem('profile-cert')}"
client_key_path = "{pem('profile-key')}"
server_ca_cert_path = "{pem('profile-ca')}"
server_name = "profile-name"
""")
    return path


# --- precedence: profile < TEMPORAL_* < flags ------------------------------------------------

def test_the_profile_gives_address_namespace_and_tls(profile):
    config = connect_config({"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "cluster"})
    assert config["target_host"] == "cluster.example:7233" and config["namespace"] == "cluster-ns"
    tls = config["tls"]
    assert tls.domain == "profile-name"
    assert b"profile-cert" in tls.client_cert and b"profile-key" in tls.client_private_key
    assert b"profile-ca" in tls.server_root_ca_cert
    assert describe(config) == "cluster.example:7233 namespace cluster-ns (mutual TLS)"


def test_without_temporal_profile_the_default_profile_is_read(profile):
    config = connect_config({"TEMPORAL_CONFIG_FILE": str(profile)})
    assert (config["target_host"], config["namespace"]) == ("from-profile:7233", "profile-ns")
    assert "tls" not in config


def test_temporal_variables_override_the_profile(profile, pem):
    config = connect_config({
        "TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "cluster",
        "TEMPORAL_ADDRESS": "from-env:7233", "TEMPORAL_NAMESPACE": "env-ns",
        "TEMPORAL_TLS_SERVER_NAME": "env-name", "TEMPORAL_TLS_CLIENT_CERT_PATH": pem("env-cert"),
    })
    assert (config["target_host"], config["namespace"]) == ("from-env:7233", "env-ns")
    assert config["tls"].domain == "env-name" and b"env-cert" in config["tls"].client_cert
    assert b"profile-key" in config["tls"].client_private_key  # what the environment leaves, the profile keeps


def test_flags_override_the_variables_and_the_profile(profile, pem):
    env = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "cluster", "TEMPORAL_ADDRESS": "from-env:7233",
           "TEMPORAL_NAMESPACE": "env-ns", "TEMPORAL_TLS_SERVER_NAME": "env-name",
           "TEMPORAL_TLS_CLIENT_CERT_PATH": pem("env-cert")}
    config = connect_config(env, Overrides(address="from-flag:7233", namespace="flag-ns", tls_server_name="flag-name",
                                           tls_cert=pem("flag-cert"), tls_ca=pem("flag-ca")))
    assert (config["target_host"], config["namespace"]) == ("from-flag:7233", "flag-ns")
    tls = config["tls"]
    assert tls.domain == "flag-name" and b"flag-cert" in tls.client_cert and b"flag-ca" in tls.server_root_ca_cert


def test_a_profile_flag_and_a_config_file_flag_choose_over_the_variables(profile, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[profile.default]\naddress = "other:7233"\n')
    env = {"TEMPORAL_CONFIG_FILE": str(other), "TEMPORAL_PROFILE": "default"}
    config = connect_config(env, Overrides(config_file=str(profile), profile="cluster"))
    assert config["target_host"] == "cluster.example:7233"


def test_with_nothing_set_it_is_the_local_dev_server():
    assert connect_config({}) == {"target_host": "localhost:7233", "namespace": "default"}


# --- selfheal dev: no environment, no file -----------------------------------------------------

def test_no_environment_reads_no_profile_and_no_variable(profile, monkeypatch, tmp_path):
    # Everything a user's shell could hold: a config file, variables, and a default profile
    # where the temporal CLI looks for one.
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    monkeypatch.setenv("TEMPORAL_PROFILE", "cluster")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "production:7233")
    monkeypatch.setenv("TEMPORAL_API_KEY", KEY)
    default = tmp_path / "home" / ".config" / "temporalio" / "temporal.toml"
    default.parent.mkdir(parents=True)
    default.write_text(profile.read_text())

    assert connect_config(None) == {"target_host": "localhost:7233", "namespace": "default"}
    assert connect_config(None, Overrides(address="127.0.0.1:7299")) == {"target_host": "127.0.0.1:7299", "namespace": "default"}
    # The file is there and would be read by anyone given an environment: None is what ignores it.
    assert connect_config({})["target_host"] == "from-profile:7233"


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
                                      "TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_CONFIG_FILE"])
def test_a_named_file_that_is_missing_is_refused_naming_the_variable(variable, tmp_path):
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConnectionProblem) as info:
        connect_config({variable: str(missing)})
    assert variable in str(info.value) and str(missing) in str(info.value)


def test_a_missing_certificate_given_by_flag_is_refused_too(tmp_path):
    with pytest.raises(ConnectionProblem, match="TEMPORAL_TLS_CLIENT_CERT_PATH: no such file"):
        connect_config({}, Overrides(tls_cert=str(tmp_path / "nowhere.pem")))


def test_an_unknown_profile_is_refused(profile):
    with pytest.raises(ConnectionProblem, match="Profile 'staging' not found"):
        connect_config({"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "staging"})


def test_a_profile_whose_certificate_is_missing_is_refused(tmp_path):
    path = tmp_path / "temporal.toml"
    path.write_text(f'[profile.default]\naddress = "x:7233"\n[profile.default.tls]\nclient_cert_path = "{tmp_path}/gone.pem"\n')
    with pytest.raises(ConnectionProblem, match="gone.pem"):
        connect_config({"TEMPORAL_CONFIG_FILE": str(path)})


def test_malformed_toml_is_refused(tmp_path):
    path = tmp_path / "temporal.toml"
    path.write_text("[profile.default\naddress = ")
    with pytest.raises(ConnectionProblem, match="Temporal connection settings"):
        connect_config({"TEMPORAL_CONFIG_FILE": str(path)})


# --- the API key, from a file --------------------------------------------------------------------

def test_the_api_key_file_is_read_and_turns_tls_on(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    config = connect_config({"TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233", "TEMPORAL_API_KEY_FILE": str(key_file)})
    assert config["api_key"] == KEY and config["tls"] is True
    assert describe(config) == "ns.acct.tmprl.cloud:7233 namespace default (TLS, API key)"
    assert KEY not in describe(config)


def test_an_api_key_flag_overrides_the_variable():
    assert connect_config({"TEMPORAL_API_KEY": "from-env"}, Overrides(api_key=KEY))["api_key"] == KEY


def test_api_key_and_api_key_file_together_are_refused(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    with pytest.raises(ConnectionProblem) as info:
        connect_config({"TEMPORAL_API_KEY": "other-key", "TEMPORAL_API_KEY_FILE": str(key_file)})
    message = str(info.value)
    assert "TEMPORAL_API_KEY and TEMPORAL_API_KEY_FILE" in message and KEY not in message and "other-key" not in message


# --- secret files ----------------------------------------------------------------------------------

def _unreadable(tmp_path):
    return tmp_path  # a directory: open() fails even for root, whom file modes do not stop


def _empty(tmp_path):
    path = tmp_path / "empty"
    path.write_text(" \n")
    return path


def _oversized(tmp_path):
    path = tmp_path / "big"
    path.write_text((KEY + "\n") * (MAX_SECRET_BYTES // len(KEY) + 1))
    return path


def _not_utf8(tmp_path):
    path = tmp_path / "latin1"
    path.write_bytes(KEY.encode() + b"\xe9\xff")
    return path


@pytest.mark.parametrize("make, says", [
    (_unreadable, "cannot read"),
    (_empty, "is empty"),
    (_oversized, f"more than {MAX_SECRET_BYTES} bytes"),
    (_not_utf8, "not UTF-8"),
    (lambda tmp: tmp / "missing", "cannot read"),
], ids=["unreadable", "empty", "oversized", "not-utf8", "missing"])
def test_a_bad_secret_file_is_refused_naming_the_variable_never_the_secret(make, says, tmp_path):
    path = make(tmp_path)
    with pytest.raises(SecretFileError) as info:
        read_secret_files({"SELFHEAL_SLACK_TOKEN_FILE": str(path)})
    message = str(info.value)
    assert message.startswith("SELFHEAL_SLACK_TOKEN_FILE:") and says in message and str(path) in message
    assert KEY not in message and "7c1e9a" not in message
    # The same rule, through the connection: a ConnectionProblem that says the same.
    with pytest.raises(ConnectionProblem) as info:
        connect_config({"TEMPORAL_API_KEY_FILE": str(path)})
    assert str(info.value).startswith("TEMPORAL_API_KEY_FILE:") and says in str(info.value) and KEY not in str(info.value)


def test_dev_zero_is_refused_without_reading_it_all():
    with pytest.raises(SecretFileError, match="too large for a secret"):
        read_secret_files({"SELFHEAL_LLM_API_KEY_FILE": "/dev/zero"})


def test_a_secret_file_replaces_its_variable_and_leaves_the_rest(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {KEY}\n\n")
    env = {"SELFHEAL_SLACK_TOKEN_FILE": str(path), "SELFHEAL_SLACK_CHANNEL": "#ops", "SELFHEAL_SLACK_SIGNING_SECRET": ""}
    assert read_secret_files(env) == {"SELFHEAL_SLACK_TOKEN": KEY, "SELFHEAL_SLACK_CHANNEL": "#ops",
                                      "SELFHEAL_SLACK_SIGNING_SECRET": ""}


def test_only_secret_settings_read_files(tmp_path):
    path = tmp_path / "whitelist-path"
    path.write_text("/etc/selfheal/whitelist.yaml")
    env = {"SELFHEAL_WHITELIST_FILE": str(path)}
    assert read_secret_files(env) == env  # not a secret: left alone, never read


# --- the settings read them ------------------------------------------------------------------------

def _secret(tmp_path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def test_worker_settings_read_secret_files(tmp_path):
    settings = WorkerSettings.from_mapping({
        "TEMPORAL_ADDRESS": "cluster.example:7233",
        "TEMPORAL_API_KEY_FILE": _secret(tmp_path, "temporal", KEY),
        "SELFHEAL_SLACK_TOKEN_FILE": _secret(tmp_path, "slack", "xoxb-from-file"),
        "SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_MODEL": "m",
        "SELFHEAL_LLM_API_KEY_FILE": _secret(tmp_path, "llm", "sk-from-file"),
    })
    assert settings.temporal["api_key"] == KEY and settings.temporal["tls"] is True
    assert settings.address == "cluster.example:7233"
    assert settings.slack_token == "xoxb-from-file"
    assert settings.llm.api_key.get_secret_value() == "sk-from-file"


def test_worker_settings_refuse_a_secret_and_its_file_together(tmp_path):
    with pytest.raises(ValueError, match="both SELFHEAL_SLACK_TOKEN and SELFHEAL_SLACK_TOKEN_FILE"):
        WorkerSettings.from_mapping({"SELFHEAL_SLACK_TOKEN": "xoxb-inline",
                                     "SELFHEAL_SLACK_TOKEN_FILE": _secret(tmp_path, "slack", "xoxb-file")})


def test_worker_settings_take_the_connection_given_and_read_no_profile(profile):
    given = {"target_host": "127.0.0.1:7299", "namespace": "dev"}
    settings = WorkerSettings.from_mapping({"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "cluster"}, temporal=given)
    assert settings.temporal == given and settings.address == "127.0.0.1:7299"


def test_worker_settings_read_the_pagerduty_routing_key_from_a_file_and_never_a_flag(tmp_path):
    settings = WorkerSettings.from_mapping({
        "SELFHEAL_PAGERDUTY_ROUTING_KEY_FILE": _secret(tmp_path, "pd", "R0UT1NG"),
        "SELFHEAL_PAGERDUTY_URL": "http://127.0.0.1:9/v2/enqueue", "SELFHEAL_UI_URL": "http://ui.test",
        "SELFHEAL_PAGERDUTY_PAGE_AUTOMATIC": "true"}, temporal={"target_host": "127.0.0.1:7233", "namespace": "default"})
    assert (settings.pagerduty_routing_key, settings.pagerduty_url, settings.ui_url) == (
        "R0UT1NG", "http://127.0.0.1:9/v2/enqueue", "http://ui.test")
    assert settings.pagerduty_page_automatic is True
    from selfheal.cli import worker_command
    assert not [p for p in inspect.signature(worker_command).parameters if "routing" in p]  # it would show in ps


def test_ingress_settings_read_secret_files(tmp_path):
    settings = IngressSettings.from_mapping({
        "SELFHEAL_INGRESS_ALERTMANAGER_TOKEN_FILE": _secret(tmp_path, "am", "am-token"),
        "SELFHEAL_INGRESS_GRAFANA_HMAC_SECRET_FILE": _secret(tmp_path, "grafana", "grafana-hmac"),
        "SELFHEAL_INGRESS_GENERIC_TOKEN": "generic-inline",
        "SELFHEAL_SLACK_SIGNING_SECRET_FILE": _secret(tmp_path, "signing", "slack-signing"),
        "SELFHEAL_SLACK_TOKEN_FILE": _secret(tmp_path, "slack", "xoxb-ingress"),
    })
    assert settings.auth_for("alertmanager").token == "am-token"
    assert settings.auth_for("grafana").hmac_secret == "grafana-hmac"
    assert settings.auth_for("generic").token == "generic-inline"
    assert (settings.slack_signing_secret, settings.slack_token) == ("slack-signing", "xoxb-ingress")


def test_ingress_settings_refuse_a_secret_and_its_file_together(tmp_path):
    with pytest.raises(ValueError, match="SELFHEAL_INGRESS_ALERTMANAGER_TOKEN and SELFHEAL_INGRESS_ALERTMANAGER_TOKEN_FILE"):
        IngressSettings.from_mapping({"SELFHEAL_INGRESS_ALERTMANAGER_TOKEN": "inline",
                                      "SELFHEAL_INGRESS_ALERTMANAGER_TOKEN_FILE": _secret(tmp_path, "am", "file")})


# --- the commands refuse to start, and say why -------------------------------------------------------

@pytest.mark.parametrize("command", ["worker", "ingress"])
def test_a_missing_client_certificate_stops_the_start_naming_the_variable(command, tmp_path):
    missing = tmp_path / "client.pem"
    result = CliRunner().invoke(app, [command, "--address", "127.0.0.1:1", "--tls-cert-path", str(missing)])
    assert result.exit_code == 2, result.output
    assert f"refusing to start: TEMPORAL_TLS_CLIENT_CERT_PATH: no such file: {missing}" in result.output.replace("\n", "")


@pytest.mark.parametrize("command", ["worker", "ingress"])
def test_an_empty_api_key_file_stops_the_start(command, tmp_path):
    empty = tmp_path / "api-key"
    empty.write_text("\n")
    result = CliRunner().invoke(app, [command, "--address", "127.0.0.1:1", "--api-key-file", str(empty)])
    assert result.exit_code == 2, result.output
    assert "refusing to start: TEMPORAL_API_KEY_FILE:" in result.output and "is empty" in result.output
