import hashlib

import pytest

from tests.whitelist.conftest import BASE, DEMO, SYSTEMD_ENTRY, whitelist_text
from selfheal.whitelist import WhitelistError, load_whitelist, load_whitelist_bytes
from selfheal.whitelist.models import KINDS

# BASE is 7 lines; the first entry starts on line 8.
ASG_ENTRY = """\
  - id: scale-workers
    kind: asg.scale
    target:
      group: workers
    bounds:
      min_capacity: 2
      max_capacity: 8
      max_step: 2
    blast_radius: fleet
    approvers: {groups: [sre]}
    rate_limit: {max_executions: 2, window: 1h}
    cooldown: 10m
    match: ['alertname="Backlog"']
    verify: {timeout: 1m}
"""


def refusal(text: str) -> WhitelistError:
    with pytest.raises(WhitelistError) as info:
        load_whitelist_bytes(text.encode(), "wl.yaml")
    return info.value


def test_demo_whitelist_loads_and_covers_every_kind():
    loaded = load_whitelist(DEMO)
    assert {e.kind for e in loaded.whitelist.entries} == set(KINDS)
    assert loaded.sha256 == hashlib.sha256(DEMO.read_bytes()).hexdigest()


def test_content_hash_covers_the_file_bytes_comments_included():
    text = whitelist_text(SYSTEMD_ENTRY)
    a = load_whitelist_bytes(text.encode()).sha256
    b = load_whitelist_bytes((text + "# reviewed again\n").encode()).sha256
    assert a != b
    assert load_whitelist_bytes(text.encode()).sha256 == a


@pytest.mark.parametrize(
    "text, line, field, message",
    [
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY, SYSTEMD_ENTRY), 17, "entries[1].id", "duplicate id 'restart-api'", id="duplicate-id"
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace('    target: {unit: api.service, host: "web-*"}\n', "")),
            8, "entries[0].target", "required key is missing", id="target-missing",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace('{unit: api.service, host: "web-*"}', '{host: "web-*"}')),
            10, "entries[0].target.unit", "required key is missing", id="target-unit-missing",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace('{unit: api.service, host: "web-*"}', '{cluster: c, service: s}')),
            10, "entries[0].target.cluster", "unknown key", id="target-of-another-kind",
        ),
        pytest.param(
            whitelist_text(ASG_ENTRY.replace("    bounds:\n      min_capacity: 2\n      max_capacity: 8\n      max_step: 2\n", "")),
            8, "entries[0].bounds", "required key is missing", id="unbounded-asg",
        ),
        pytest.param(
            whitelist_text(ASG_ENTRY.replace("      max_step: 2\n", "")),
            12, "entries[0].bounds.max_step", "required key is missing", id="asg-step-unbounded",
        ),
        pytest.param(
            whitelist_text(ASG_ENTRY.replace("min_capacity: 2", "min_capacity: 9")),
            14, "entries[0].bounds.max_capacity", "max_capacity 8 is below min_capacity 9", id="min-above-max",
        ),
        pytest.param(
            whitelist_text(
                ASG_ENTRY.replace("    kind: asg.scale\n    target:\n      group: workers\n", "    kind: ec2.reboot\n    target:\n      tags: {Role: batch}\n")
                .replace("    bounds:\n      min_capacity: 2\n      max_capacity: 8\n      max_step: 2\n", "")
            ),
            10, "entries[0].target.max_instances", "required key is missing", id="ec2-instance-count-unbounded",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("kind: systemd.restart", "kind: k8s.delete_namespace")),
            9, "entries[0].kind", "unknown kind 'k8s.delete_namespace'", id="unknown-kind",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("blast_radius: instance", "blast_radius: galaxy")),
            11, "entries[0].blast_radius", "blast radius 'galaxy' has no tier", id="blast-radius-without-tier",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("cooldown: 10m", "cooldwn: 10m")),
            14, "entries[0].cooldwn", "unknown key", id="typo-is-an-unknown-key",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("groups: [sre]", "groups: [sre, dba]")),
            12, "entries[0].approvers.groups[1]", "unknown group 'dba'", id="unknown-group",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("blast_radius: instance", "blast_radius: fleet").replace("groups: [sre]", "people: [alice]")),
            12, "entries[0].approvers", "needs 2 distinct approver(s) but only 1 may approve", id="too-few-approvers-for-tier",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("""['alertname="ApiDown"']""", """['alertname=~"(unclosed"']""")),
            15, "entries[0].match[0]", "invalid regular expression", id="bad-regex",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("""['alertname="ApiDown"']""", """['alertname!="ApiDown"']""")),
            15, "entries[0].match", "needs at least one positive matcher", id="negative-only-match",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("window: 1h", "window: 0s")),
            13, "entries[0].rate_limit.window", "must be longer than 0s", id="zero-window",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("cooldown: 10m", "cooldown: soon")),
            14, "entries[0].cooldown", "invalid", id="unparseable-duration",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY) + "  - [not, a, mapping\n", 18, "<yaml>", "expected", id="yaml-syntax",
        ),
        pytest.param(
            BASE.replace("version: 1\n", "version: 1\nversion: 1\n") + SYSTEMD_ENTRY, 2, "version", "key given twice", id="duplicate-yaml-key",
        ),
        pytest.param(
            BASE.replace("  reviewed_by: [alice]\n", ""), 2, "metadata.reviewed_by", "required key is missing", id="unreviewed",
        ),
        pytest.param(whitelist_text(SYSTEMD_ENTRY) + "surprise: true\n", 17, "surprise", "unknown key", id="unknown-top-level-key"),
        pytest.param("", 1, "<file>", "empty", id="empty-file"),
    ],
)
def test_invalid_whitelist_is_refused_with_file_line_and_field(text, line, field, message):
    err = refusal(text)
    wanted = [p for p in err.problems if p.field == field]
    assert wanted, f"no problem reported for {field}; got {err.lines()}"
    assert wanted[0].line == line, err.lines()
    assert message in wanted[0].message
    assert f"wl.yaml:{line}: {field}: " in str(err)


def test_every_problem_is_reported_in_one_pass():
    text = whitelist_text(
        SYSTEMD_ENTRY,
        SYSTEMD_ENTRY.replace("blast_radius: instance", "blast_radius: galaxy"),
        ASG_ENTRY.replace("min_capacity: 2", "min_capacity: 9"),
    )
    fields = {p.field for p in refusal(text).problems}
    assert {"entries[1].id", "entries[1].blast_radius", "entries[2].bounds.max_capacity"} <= fields


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(WhitelistError) as info:
        load_whitelist(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_default_tiers_apply_when_the_file_names_none(demo):
    loaded = load_whitelist_bytes(whitelist_text(SYSTEMD_ENTRY).encode()).whitelist
    assert {name: t.approvals for name, t in loaded.tiers.items()} == {"instance": 0, "service": 1, "fleet": 2, "region": 2}


def test_whitelist_survives_a_json_round_trip_unchanged(demo):
    # The workflow receives the whitelist as data through Temporal's pydantic converter.
    from selfheal.whitelist.models import Whitelist

    again = Whitelist.model_validate_json(demo.model_dump_json())
    assert again == demo


PLACED = ASG_ENTRY.replace("      group: workers\n", '      group: workers\n      region: eu-west-1\n      account: "123456789012"\n')


def test_an_aws_target_that_names_its_region_and_account_loads():
    loaded = load_whitelist_bytes(whitelist_text(PLACED).encode(), "wl.yaml")
    target = loaded.whitelist.entries[0].target
    assert (target.region, target.account) == ("eu-west-1", "123456789012")


@pytest.mark.parametrize("text, line, field, message", [
    pytest.param(whitelist_text(ASG_ENTRY), 10, "entries[0].target.region", "must name its region", id="no-region"),
    pytest.param(whitelist_text(ASG_ENTRY), 10, "entries[0].target.account", "must name its account", id="no-account"),
    pytest.param(whitelist_text(PLACED.replace('"123456789012"', "123456789012")), 13, "entries[0].target.account",
                 "write the account id in quotes", id="account-as-a-number"),
    pytest.param(whitelist_text(PLACED.replace('"123456789012"', '"12345"')), 13, "entries[0].target.account",
                 "should match pattern", id="account-too-short"),
    pytest.param(whitelist_text(PLACED.replace("eu-west-1", "Europe")), 12, "entries[0].target.region",
                 "should match pattern", id="region-not-a-region"),
    pytest.param(whitelist_text(PLACED.replace("    kind: asg.scale\n    target:\n      group: workers\n",
                                               "    kind: ecs.rollback\n    target:\n      cluster: c\n      service: s\n"
                                               "      task_definition: arn:aws:ecs:us-east-1:123456789012:task-definition/s:3\n")
                                .replace("    bounds:\n      min_capacity: 2\n      max_capacity: 8\n      max_step: 2\n", "")),
                 13, "entries[0].target.task_definition", "the pinned ARN is in us-east-1/123456789012", id="arn-elsewhere"),
])
def test_an_aws_target_must_say_where_it_acts(text, line, field, message):
    error = refusal(text)
    hits = [p for p in error.problems if p.field == field]
    assert hits and message in hits[0].message and hits[0].line == line, error.lines()
