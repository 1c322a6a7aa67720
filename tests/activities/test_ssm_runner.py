"""The SSM runner: only the whitelisted documents, one command per restart across retries.

moto records SendCommand but runs nothing, so these tests exercise the API calls (the
SendCommand parameters, polling GetCommandInvocation, the CommandId reuse), never the
command's effect, and do not rely on moto for safety: safety comes from the document's
``allowedValues`` and ``case`` statement (tests/grants/test_ssm.py) and from the runner
refusing every other argv before any AWS call (checked here with moto's recorder).
Statuses moto never reports (pending, failed) are played by a scripted stand-in client.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from datetime import datetime, timezone

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.runner import UnreachableHost
from selfheal.activities.log_tail import recent_journal
from selfheal.activities.ssm_runner import NotWhitelistedCommand, SsmRunner, SsmTarget, journal_window, narrow_journal
from selfheal.activities.systemd import journal_lines, systemctl, unit_state
from selfheal.dev.aws_sim import DEMO_ACCOUNT, DEMO_REGION
from selfheal.activities.ssm_documents import commands
from tests.grants.test_ssm import system_whitelist

SHOW = commands("nginx.service")["show"]
RESTART = systemctl("system", "restart", "nginx.service")
TARGET = SsmTarget(region=DEMO_REGION, account=DEMO_ACCOUNT, poll_every=0.02)


@pytest.fixture
def runner(aws_world):
    return SsmRunner(TARGET, system_whitelist(), aws_world.clients())


@pytest.fixture
def host(aws_world):
    return aws_world.seeded["batch_instances"][0]


def sent(aws_world) -> list[dict]:
    return aws_world.client("ssm").list_commands()["Commands"]


def send_requests(aws_world) -> list[dict]:
    """The SendCommand request bodies moto's recorder saw since ``start_recording``. (moto's
    own Command lists every instance of the region when no Targets are given: not ours.)"""
    bodies = []
    for line in aws_world.recording.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if (entry.get("headers") or {}).get("X-Amz-Target") == "AmazonSSM.SendCommand":
            body = entry["body"]
            bodies.append(json.loads(base64.b64decode(body) if entry.get("body_encoded") else body))
    return bodies


async def test_show_sends_one_command_of_the_units_document(runner, aws_world, host):
    result = await runner.run(host, SHOW, timeout=10)
    assert (result.argv, result.returncode, result.stdout, result.stderr) == (tuple(SHOW), 0, "", "")
    [command] = sent(aws_world)
    assert command["DocumentName"] == "selfheal-restart-restart-nginx" and command["Parameters"] == {"action": ["show"]}
    [request] = send_requests(aws_world)
    assert request == {"InstanceIds": [host], "DocumentName": "selfheal-restart-restart-nginx",
                       "Parameters": {"action": ["show"]}, "TimeoutSeconds": 30,
                       "Comment": "selfheal show selfheal-restart-restart-nginx"}
    calls = aws_world.calls()
    assert calls.count("SendCommand") == 1 and "GetCommandInvocation" in calls, calls


async def test_systemd_py_reads_and_the_restart_go_through_their_documents(runner, aws_world, host):
    state = await unit_state(runner, host, "system", "nginx.service")  # moto's empty output: an empty state
    assert state.invocation_id == "" and state.active_state == ""
    assert await journal_lines(runner, host, "system", "nginx.service", datetime(2026, 1, 1, tzinfo=timezone.utc), 20) == []
    # The evidence reader's journal read (a window with an end) goes through the same document.
    assert await recent_journal(runner, host, "system", "nginx.service", datetime(2026, 1, 1, tzinfo=timezone.utc),
                                datetime(2026, 1, 2, tzinfo=timezone.utc), 20) == []
    assert (await runner.run(host, RESTART, timeout=10, privileged=True)).ok
    assert [(c["DocumentName"], c["Parameters"]) for c in sent(aws_world)] == [
        ("selfheal-restart-restart-nginx", {"action": [a]}) for a in ("show", "journal", "journal", "restart")]


REFUSED = [
    (commands("other.service")["show"], False),                                  # not whitelisted
    (systemctl("system", "stop", "nginx.service"), True),                        # another verb
    (systemctl("user", "show", "-p", SHOW[5], "nginx.service"), False),          # the user manager
    (["rm", "-rf", "/"], False),
    ([*SHOW, "--all"], False),                                                   # an extra argument
    (SHOW[:-1], False),                                                          # a prefix of one
    (RESTART, False),                                                            # restart, unprivileged
    (SHOW, True),                                                                # a read, privileged
    (commands("worker@2.service")["show"], False),                               # whitelisted for i-0a* only
    (["journalctl", "--unit", "nginx.service", "--output", "json", "--no-pager", "--since", "-1y", "--lines", "5"], False),
]


async def test_anything_else_is_refused_without_calling_aws(runner, aws_world):
    # One moto world for all cases. worker@2 is whitelisted for i-0a* only, and moto's ids
    # are random: one in 256 begins so (it failed a CI run once); three never all do.
    host = next(i for i in aws_world.seeded["batch_instances"] if not i.startswith("i-0a"))
    for argv, privileged in REFUSED:
        with pytest.raises(NotWhitelistedCommand, match="runs only the whitelisted documents|privileged"):
            await runner.run(host, argv, timeout=10, privileged=privileged)
    for bad_host in ["web-1", "localhost", "i-xyz", "i-0123", "mi-0123456789abcdef0", "i-0123456789abcdef0 ", ""]:
        with pytest.raises(UnreachableHost, match="EC2 instances by id"):
            await runner.run(bad_host, SHOW, timeout=10)
    assert aws_world.calls() == []


async def test_a_retried_restart_polls_the_first_attempts_command(runner, aws_world, host):
    first = ActivityEnvironment()
    heartbeats: list[tuple] = []
    first.on_heartbeat = lambda *details: heartbeats.append(details)
    assert (await first.run(runner.run, host, RESTART, 10, True)).ok
    [command] = sent(aws_world)
    details = heartbeats[-1][0]
    assert details == {f"ssm:{host}:selfheal-restart-restart-nginx:restart": command["CommandId"]}

    # The worker died after sending: Temporal retries with the last heartbeat's details.
    aws_world.start_recording()
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(first.info, heartbeat_details=[details], attempt=2)
    assert (await retry.run(runner.run, host, RESTART, 10, True)).ok
    assert "SendCommand" not in aws_world.calls() and "GetCommandInvocation" in aws_world.calls()
    assert [c["CommandId"] for c in sent(aws_world)] == [command["CommandId"]]
    # Reads are never reused: a show after the restart must be a new command.
    await retry.run(runner.run, host, SHOW, 10, False)
    assert aws_world.calls().count("SendCommand") == 1


# --- statuses moto never reports, from a scripted stand-in for AwsClients -------------

class Scripted:
    def __init__(self, *invocations):
        self.invocations = list(invocations)
        self.calls: list[tuple[str, dict]] = []

    async def require_account(self, region, account):
        pass

    async def call(self, api, region, operation, /, **kwargs):
        self.calls.append((operation, kwargs))
        if operation == "send_command":
            return {"Command": {"CommandId": f"cmd-{len(self.calls)}"}}
        step = self.invocations.pop(0) if len(self.invocations) > 1 else self.invocations[0]
        if step == "missing":
            raise ApplicationError("no invocation yet", type="Aws.InvocationDoesNotExist")
        return step


def invocation(status, code=-1, out="", err=""):
    return {"Status": status, "ResponseCode": code, "StandardOutputContent": out, "StandardErrorContent": err}


async def test_polls_through_a_missing_and_a_pending_invocation():
    clients = Scripted("missing", invocation("Pending"), invocation("InProgress"), invocation("Success", 0, "LoadState=loaded\n"))
    result = await SsmRunner(TARGET, system_whitelist(), clients).run("i-0123456789", SHOW, timeout=5)
    assert (result.returncode, result.stdout) == (0, "LoadState=loaded\n")
    assert [op for op, _ in clients.calls] == ["send_command"] + ["get_command_invocation"] * 4
    assert clients.calls[0][1]["TimeoutSeconds"] == 30  # never longer than we would wait for it


async def test_a_failed_command_reports_its_exit_code_and_a_stuck_one_times_out():
    failed = Scripted(invocation("Failed", 5, err="Job for nginx.service failed."))
    result = await SsmRunner(TARGET, system_whitelist(), failed).run("i-0123456789", RESTART, timeout=5, privileged=True)
    assert result.returncode == 5 and "Job for nginx.service failed." in result.stderr and "ssm Failed" in result.stderr
    undelivered = Scripted(invocation("TimedOut"))
    assert (await SsmRunner(TARGET, system_whitelist(), undelivered).run("i-0123456789", SHOW, timeout=5)).returncode == 255
    with pytest.raises(asyncio.TimeoutError):
        await SsmRunner(TARGET, system_whitelist(), Scripted(invocation("InProgress"))).run("i-0123456789", SHOW, timeout=0.2)


async def test_a_retry_resends_only_when_the_earlier_restart_ended_without_success():
    key = "ssm:i-0123456789:selfheal-restart-restart-nginx:restart"
    for earlier, resent in ((invocation("InProgress"), False), (invocation("Failed", 1), True)):
        clients = Scripted(earlier, invocation("Success", 0))
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, heartbeat_details=[{key: "cmd-earlier"}], attempt=2)
        await env.run(SsmRunner(TARGET, system_whitelist(), clients).run, "i-0123456789", RESTART, 5, True)
        assert ("send_command" in [op for op, _ in clients.calls]) is resent


def test_journal_output_is_narrowed_to_what_the_caller_asked_for():
    lines = [json.dumps({"__REALTIME_TIMESTAMP": str(t * 1_000_000), "MESSAGE": f"m{t}"}) for t in (100, 200, 300, 400)]
    # Newest first, as the document's --reverse reads them.
    stdout = "\n".join(reversed(lines)) + '\n{"__REALTIME_TIMESTAMP": "5000000'  # cut off at 24,000 characters
    head = tuple(commands("nginx.service")["journal"][:9])
    argv = head + ("@200", "--lines", "2", "--reverse")
    assert narrow_journal(journal_window("nginx.service", argv), stdout) == f"{lines[3]}\n{lines[2]}\n"
    # The evidence reader's window: since and until, then the newest N within it.
    argv = head + ("@200", "--until", "@300", "--lines", "5", "--reverse")
    assert narrow_journal(journal_window("nginx.service", argv), stdout) == f"{lines[2]}\n{lines[1]}\n"
    for bad in (head + ("@200", "--until", "300", "--lines", "5", "--reverse"),      # not a timestamp
                head + ("@200", "--until", "@300", "--lines", "5"),                   # not --reverse
                head + ("@200", "--lines", "5", "--until", "@300", "--reverse"),      # another order
                head + ("@200", "--until", "@300", "--until", "@400", "--lines", "5", "--reverse")):
        assert journal_window("nginx.service", bad) is None


def test_target_is_strict():
    with pytest.raises(ValueError):
        SsmTarget(region=DEMO_REGION, account="1234")
    with pytest.raises(ValueError):
        SsmTarget(region=DEMO_REGION, account=DEMO_ACCOUNT, document_prefix="AWS-RunShellScript")
    with pytest.raises(ValueError):
        SsmTarget(region=DEMO_REGION, account=DEMO_ACCOUNT, extra=1)
