"""The executor's own checks: it trusts nothing the workflow hands it."""

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.evidence import EvidenceReader
from selfheal.activities.remediate import SystemdRemediator
from selfheal.contract import ActionRequest, RemediationInput
from tests.workflows.helpers import whitelist_yaml
from selfheal.whitelist import load_whitelist_bytes, target_of


@pytest.fixture
def loaded(unit):
    return load_whitelist_bytes(whitelist_yaml(unit.name).encode(), "test.yaml")


def request_for(loaded, entry_id="restart-api", **target) -> ActionRequest:
    return ActionRequest(entry_id=entry_id, target={**target_of(loaded.whitelist.entry(entry_id)), **target})


async def restart(loaded, runner, request, baseline):
    inp = RemediationInput(incident_id="i", idempotency_key="i/act/x", whitelist_sha256=loaded.sha256, request=request, baseline=baseline)
    return await ActivityEnvironment().run(SystemdRemediator(runner, loaded).restart_unit, inp)


@pytest.mark.parametrize(
    "entry_id, target, rule",
    [
        ("restart-api", {"unit": "sshd.service"}, "target"),
        ("restart-api", {"host": "db-1"}, "target"),
        ("restart-api", {"scope": "system"}, "target"),
        ("rollback-checkout", {}, "not a systemd.restart entry"),
        ("no-such-entry", None, "not a systemd.restart entry"),
    ],
)
async def test_out_of_policy_request_is_refused_without_retry_and_nothing_restarts(loaded, runner, unit, entry_id, target, rule):
    baseline = await ActivityEnvironment().run(EvidenceReader(runner, loaded).read_unit_state, request_for(loaded))
    if target is None:
        request = ActionRequest(entry_id=entry_id, target={})
    else:
        request = request_for(loaded, entry_id, **target)
    with pytest.raises(ApplicationError) as info:
        await restart(loaded, runner, request, baseline)
    assert info.value.non_retryable and info.value.type == "OutOfPolicy"
    assert rule in str(info.value)
    assert unit.start_count() == 1


async def test_a_repeated_restart_has_the_effect_of_one(loaded, runner, unit):
    request = request_for(loaded)
    baseline = await ActivityEnvironment().run(EvidenceReader(runner, loaded).read_unit_state, request)
    first = await restart(loaded, runner, request, baseline)
    again = await restart(loaded, runner, request, baseline)
    assert (first.action, again.action) == ("executed", "already_done")
    assert again.before.invocation_id == first.after.invocation_id
    assert unit.start_count() == 2


async def test_a_host_this_runner_cannot_reach_fails_without_retry(loaded, unit):
    from selfheal.activities.runner import LocalRunner

    request = request_for(loaded)
    baseline_reader = EvidenceReader(LocalRunner(local_hosts=["elsewhere"]), loaded)
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(baseline_reader.read_unit_state, request)
    assert info.value.non_retryable and info.value.type == "UnreachableHost"
