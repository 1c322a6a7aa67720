"""Per-host runner selection: the runners config file and RoutingRunner (no SSH server needed)."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from tests.whitelist.conftest import models_within
from selfheal.activities.routing import RoutingRunner, RunnerRule, RunnersConfig, build_runner
from selfheal.activities.runner import CommandResult, LocalRunner, UnreachableHost
from selfheal.activities.ssh_runner import SshRunner
from selfheal.activities.targets import LocalTarget, SshTarget

EXAMPLE = """\
runners:
  - hosts: localhost
    local: {}
  - hosts: "web-[0-9]*"
    ssh:
      user: selfheal
      address: "{host}.internal"
      key: keys/id_ed25519
      known_hosts: /etc/selfheal/known_hosts
      prefix: [env, XDG_RUNTIME_DIR=/run/user/1000]
  - hosts: "*"
    ssh: {user: ops, port: 2222, key: /k, known_hosts: /kh, privileged_prefix: []}
"""


class Recording:
    def __init__(self, name: str):
        self.name, self.calls, self.closed = name, [], False

    async def run(self, host, argv, timeout=60.0, privileged=False):
        self.calls.append((host, tuple(argv), timeout, privileged))
        return CommandResult(tuple(argv), 0, self.name, "")

    async def close(self):
        self.closed = True


class NoClose:
    async def run(self, host, argv, timeout=60.0, privileged=False):
        raise AssertionError("not expected")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runners.yaml"
    path.write_text(text)
    return path


# --- RoutingRunner ----------------------------------------------------------------------

async def test_first_matching_rule_wins():
    exact, web, rest = Recording("exact"), Recording("web"), Recording("rest")
    routing = RoutingRunner([("web-1", exact), ("web-*", web), ("*", rest)])
    assert (await routing.run("web-1", ["a"])).stdout == "exact"
    assert (await routing.run("web-2", ["b"], timeout=5, privileged=True)).stdout == "web"
    assert (await routing.run("db-1", ["c"])).stdout == "rest"
    assert web.calls == [("web-2", ("b",), 5, True)]
    # fnmatchcase: no case folding, so WEB-2 is not web-*
    assert (await routing.run("WEB-2", ["d"])).stdout == "rest"


async def test_no_matching_rule_is_unreachable():
    routing = RoutingRunner([("web-*", Recording("web"))])
    with pytest.raises(UnreachableHost, match="no runner is configured for host 'db-1'"):
        await routing.run("db-1", ["true"])


@pytest.mark.parametrize("host", [
    "", "-oProxyCommand=touch /tmp/x", "root@web-1", "web 1", "web-1\n", "web;id", "../etc", "web/1",
    "$(id)", ".hidden", "_x", "a" * 254, "wéb", None, 7,
])
async def test_hostile_host_names_are_refused_before_any_rule_sees_them(host):
    catch_all = Recording("all")
    routing = RoutingRunner([("*", catch_all)])
    with pytest.raises(UnreachableHost, match="refusing host name"):
        await routing.run(host, ["true"])
    assert catch_all.calls == []


@pytest.mark.parametrize("host", ["web-1", "db_2.eu-west-1.internal", "10.0.0.7", "A", "a" * 253])
async def test_plain_host_names_pass(host):
    routing = RoutingRunner([("*", Recording("all"))])
    assert (await routing.run(host, ["true"])).ok


async def test_close_closes_the_runners_that_can_be_closed():
    a, b = Recording("a"), Recording("b")
    await RoutingRunner([("a", a), ("b", NoClose()), ("*", b)]).close()
    assert a.closed and b.closed


def test_a_bad_glob_is_refused():
    with pytest.raises(ValueError, match="bad host glob"):
        RoutingRunner([("web/*", Recording("x"))])


# --- RunnersConfig ----------------------------------------------------------------------

def test_example_loads_and_builds(tmp_path):
    config = RunnersConfig.load(write(tmp_path, EXAMPLE))
    local, web, rest = config.runners
    assert local.local == LocalTarget() and local.ssh is None
    assert web.ssh.address_for("web-7") == "web-7.internal"
    assert web.ssh.key == tmp_path / "keys" / "id_ed25519"  # relative to the file
    assert web.ssh.known_hosts == Path("/etc/selfheal/known_hosts")
    assert web.ssh.privileged_prefix == ["sudo", "-n"] and web.ssh.port == 22 and web.ssh.connect_timeout == 10
    assert rest.ssh.address_for("db-1") == "db-1" and rest.ssh.privileged_prefix == []

    routing = build_runner(config)
    runners = [runner for _, runner in routing._rules]
    assert [type(r) for r in runners] == [LocalRunner, SshRunner, SshRunner]
    assert routing.runner_for("web-3") is runners[1]
    assert routing.runner_for("webserver") is runners[2]
    assert runners[1].remote_command(["systemctl", "--user", "restart", "api.service"], privileged=True) == \
        "env XDG_RUNTIME_DIR=/run/user/1000 sudo -n systemctl --user restart api.service"


async def test_a_local_rule_runs_here_but_only_for_this_machines_names(tmp_path):
    routing = build_runner(RunnersConfig.load(write(tmp_path, "runners: [{hosts: '*', local: {prefix: [env, X=1]}}]")))
    result = await routing.run("localhost", ["sh", "-c", "echo $X"])
    assert result.stdout == "1\n"
    assert (await routing.run(socket.gethostname(), ["true"])).ok
    with pytest.raises(UnreachableHost, match="not this machine"):
        await routing.run("db-1", ["true"])  # a broad glob never turns "db-1" into this machine


@pytest.mark.parametrize("text, line, field, message", [
    ("runners: [{hosts: web-1, ssh: {user: u, key: /k}}]", 1, "runners[0].ssh.known_hosts", "required key is missing"),
    ("runners: [{hosts: web-1}]", 1, "runners[0]", "exactly one of local, ssh, ssm (got none)"),
    ("runners: [{hosts: web-1, local: {}, ssh: {user: u, key: /k, known_hosts: /kh}}]", 1, "runners[0]",
     "exactly one of local, ssh, ssm (got local, ssh)"),
    ("runners: [{hosts: web-1, ssm: {}}]", 1, "runners[0].ssm.region", "required key is missing"),
    ("runners: [{hosts: web-1, winrm: {}}]", 1, "runners[0].winrm", "unknown key (not part of the runners format)"),
    ("runners: [{hosts: 'web/*', local: {}}]", 1, "runners[0].hosts", "glob of host-name characters"),
    ("runners:\n- {hosts: a, local: {}}\n- hosts: b\n  ssh: {user: u, key: /k, known_hosts: /kh, port: 0}\n", 4,
     "runners[1].ssh.port", "greater than or equal to 1"),
    ("runners: [{hosts: a, ssh: {user: u, key: /k, known_hosts: /kh, address: '{hostname}.x'}}]", 1,
     "runners[0].ssh.address", "optionally containing {host}"),
    ("runners: [{hosts: a, local: {prefix: sudo}}]", 1, "runners[0].local.prefix", "valid list"),
    ("# a comment\nrunner: []", 2, "runner", "unknown key"),
    ("# a comment\nrunner: []", 2, "runners", "required key is missing"),
    ("- just a list", 1, "<file>", "the top level must be a mapping"),
    ("", 1, "<file>", "the file is empty"),
])
def test_bad_files_name_the_file_the_line_and_the_field(tmp_path, text, line, field, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        RunnersConfig.load(path)
    assert f"{path}:{line}: {field}: " in str(info.value) and message in str(info.value), str(info.value)


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'absent.yaml'}:0: <file>: cannot read"):
        RunnersConfig.load(tmp_path / "absent.yaml")
    path = write(tmp_path, "runners:\n  - [unclosed\n")
    with pytest.raises(ValueError, match=f"{path}:3: <yaml>: "):
        RunnersConfig.load(path)


def test_a_duplicate_key_and_the_other_problems_are_reported_together(tmp_path):
    path = write(tmp_path, """\
runners:
  - hosts: localhost
    local: {}
    hosts: "*"
  - hosts: web-1
    ssh:
      user: ops
      key: /k
      port: 0
      knwon_hosts: /kh
  - hosts: db-1
""")
    with pytest.raises(ValueError) as info:
        RunnersConfig.load(path)
    assert str(info.value).splitlines() == [
        f"{path}:4: runners[0].hosts: key given twice in the same mapping",
        f"{path}:6: runners[1].ssh.known_hosts: required key is missing",
        f"{path}:9: runners[1].ssh.port: Input should be greater than or equal to 1",
        f"{path}:10: runners[1].ssh.knwon_hosts: unknown key (not part of the runners format)",
        f"{path}:11: runners[2]: give exactly one of local, ssh, ssm (got none)",
    ]


def test_every_model_of_the_runners_file_forbids_unknown_keys():
    models = models_within(RunnersConfig)
    assert SshTarget in models and all(m.model_config.get("extra") == "forbid" for m in models), models


def test_models_are_frozen_and_exactly_one_target_in_code_too():
    rule = RunnerRule(hosts="a", local=LocalTarget())
    with pytest.raises(Exception):
        rule.hosts = "b"
    with pytest.raises(ValueError, match="exactly one"):
        RunnerRule(hosts="a", local=LocalTarget(), ssh=SshTarget(user="u", key="/k", known_hosts="/kh"))


def test_an_ipv6_address_is_a_valid_ssh_address():
    assert SshTarget(user="u", key="/k", known_hosts="/kh", address="::1").address_for("h") == "::1"


@pytest.mark.parametrize("argv", [
    ["printf", "%s\n", "a b 'c' \"d\"; $(touch /tmp/x) `id`\nnext"],
    ["", "-n", "*", "~", "$HOME", "a\\b"],
])
def test_the_remote_command_splits_back_into_exactly_the_argv(argv):
    runner = SshRunner(SshTarget(user="u", key="/k", known_hosts="/kh", prefix=["env", "A=1 2"]))
    assert shlex.split(runner.remote_command(argv)) == ["env", "A=1 2", *argv]
    assert shlex.split(runner.remote_command(argv, privileged=True)) == ["env", "A=1 2", "sudo", "-n", *argv]


async def test_a_worker_refuses_to_start_with_a_bad_runners_file(tmp_path):
    from selfheal.settings import WorkerSettings
    from selfheal.worker import run_worker

    root = Path(__file__).resolve().parents[2]
    bad = tmp_path / "runners.yaml"
    bad.write_text("runners:\n  - hosts: 'web-*'\n    ssh: {user: selfheal, key: /k}\n")
    settings = WorkerSettings(whitelist=str(root / "deploy/demo/whitelist.yaml"), diagnosis=str(root / "deploy/demo/diagnosis.yaml"),
                              runners=str(bad), address="127.0.0.1:1")
    with pytest.raises(ValueError) as info:
        await run_worker(settings)
    assert str(bad) in str(info.value) and "known_hosts" in str(info.value)


def test_an_ssm_rule_routes_instances_to_the_ssm_runner_and_needs_the_whitelist():
    from selfheal.activities.aws_clients import AwsClients
    from selfheal.activities.ssm_runner import SsmRunner
    from selfheal.whitelist import load_whitelist

    root = Path(__file__).resolve().parents[2]
    config = RunnersConfig.parse({"runners": [{"hosts": "i-*", "ssm": {"region": "eu-west-1", "account": "123456789012"}},
                                              {"hosts": "localhost", "local": {}}]})
    with pytest.raises(ValueError, match="SSM runner needs"):
        build_runner(config)
    runner = build_runner(config, load_whitelist(root / "deploy/demo/whitelist.yaml"), AwsClients("http://127.0.0.1:9"))
    assert isinstance(runner.runner_for("i-0123456789abcdef0"), SsmRunner)
    assert isinstance(runner.runner_for("localhost"), LocalRunner)
