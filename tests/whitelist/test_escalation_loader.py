"""The loader refuses entries the governor could escalate to a tier nobody can approve.

Every entry may be raised: by autonomy to its escalation tier (``autonomy.escalate_to``,
default the whitelist's highest), and by failure memory, its breaker or a pause to the
approving tier. Its approvers must be enough for the highest of those and its own tier.
"""

import pytest

from tests.whitelist.conftest import BASE, DEMO, SYSTEMD_ENTRY, whitelist_text
from selfheal.whitelist import WhitelistError, load_whitelist, load_whitelist_bytes

# BASE is 7 lines and uses the default tiers (instance 0, service 1, fleet 2, region 2);
# SYSTEMD_ENTRY starts on line 8, its approvers on line 12, its last line is 16.
ALICE_ONLY = SYSTEMD_ENTRY.replace("approvers: {groups: [sre]}", "approvers: {people: [alice]}")
AUTONOMY = "    autonomy:\n      max_targets: 2\n      escalate_to: {tier}\n"  # lines 17-19 after one entry

# The same head with a tier needing three people: the highest tier is no longer fleet.
TIERED = BASE.replace("groups:\n", "tiers:\n  instance: {approvals: 0}\n  service: {approvals: 1}\n"
                                   "  fleet: {approvals: 2}\n  global: {approvals: 3}\ngroups:\n")
TIERED_SHIFT = 5  # lines TIERED adds before the entries


def refused(text: str) -> list[str]:
    with pytest.raises(WhitelistError) as info:
        load_whitelist_bytes(text.encode(), "wl.yaml")
    return info.value.lines()


def with_autonomy(entry: str, tier: str) -> str:
    return entry + AUTONOMY.format(tier=tier)


@pytest.mark.parametrize(
    "text, lines",
    [
        pytest.param(
            whitelist_text(ALICE_ONLY),
            ["wl.yaml:12: entries[0].approvers: may be escalated to tier 'fleet', which needs 2 distinct approver(s), "
             "but only 1 may approve"],
            id="default-escalation-to-highest-tier-needs-two",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("    approvers: {groups: [sre]}\n", "")),
            ["wl.yaml:8: entries[0].approvers: may be escalated to tier 'fleet', which needs 2 distinct approver(s), "
             "but only 0 may approve"],
            id="no-approvers-key-points-at-the-entry",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY, with_autonomy(ALICE_ONLY.replace("restart-api", "restart-api-2"), "region")),
            ["wl.yaml:21: entries[1].approvers: may be escalated to tier 'region', which needs 2 distinct approver(s), "
             "but only 1 may approve"],
            id="explicit-escalate-to-needs-more-second-entry",
        ),
        pytest.param(
            whitelist_text(with_autonomy(ALICE_ONLY, "fleet"), head=TIERED),
            [f"wl.yaml:{12 + TIERED_SHIFT}: entries[0].approvers: may be escalated to tier 'fleet', which needs 2 "
             "distinct approver(s), but only 1 may approve"],
            id="explicit-escalate-to-below-highest-still-too-high",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY.replace("groups: [sre]", "people: [alice, bob]"), head=TIERED),
            [f"wl.yaml:{12 + TIERED_SHIFT}: entries[0].approvers: may be escalated to tier 'global', which needs 3 "
             "distinct approver(s), but only 2 may approve"],
            id="default-escalation-follows-a-custom-highest-tier",
        ),
        pytest.param(
            whitelist_text(with_autonomy(SYSTEMD_ENTRY.replace("    approvers: {groups: [sre]}\n", ""), "instance")),
            ["wl.yaml:18: entries[0].autonomy.escalate_to: tier 'instance' needs no approver: escalating to it "
             "would let the fleet-wide case act alone"],
            id="escalate-to-an-automatic-tier-is-refused",
        ),
        pytest.param(
            whitelist_text(with_autonomy(SYSTEMD_ENTRY, "galaxy")),
            ["wl.yaml:19: entries[0].autonomy.escalate_to: tier 'galaxy' does not exist; "
             "known tiers: fleet, instance, region, service"],
            id="unknown-escalate-to-tier",
        ),
        pytest.param(
            whitelist_text(SYSTEMD_ENTRY, head=BASE.replace("groups:\n", "tiers:\n  instance: {approvals: 0}\n"
                                                                         "  service: {approvals: 0}\ngroups:\n")),
            ["wl.yaml:5: tiers: no tier needs an approver, so a pause, a breaker or failure memory could ask no one"],
            id="all-tiers-automatic",
        ),
    ],
)
def test_entry_that_could_be_escalated_beyond_its_approvers_is_refused(text, lines):
    assert refused(text) == lines


def test_every_escalation_problem_is_reported_at_once():
    text = whitelist_text(ALICE_ONLY, with_autonomy(SYSTEMD_ENTRY.replace("restart-api", "restart-b"), "galaxy"),
                          ALICE_ONLY.replace("restart-api", "restart-c"))
    assert [": ".join(line.split(": ", 2)[:2]) for line in refused(text)] == [
        "wl.yaml:12: entries[0].approvers",
        "wl.yaml:28: entries[1].autonomy.escalate_to",
        "wl.yaml:33: entries[2].approvers",
    ]


@pytest.mark.parametrize(
    "text, entry_id, escalation",
    [
        pytest.param(whitelist_text(SYSTEMD_ENTRY), "restart-api", "fleet", id="group-of-three-meets-default-fleet"),
        pytest.param(whitelist_text(SYSTEMD_ENTRY.replace("groups: [sre]", "people: [alice, bob]")), "restart-api", "fleet",
                     id="two-people-meet-default-fleet"),
        pytest.param(whitelist_text(with_autonomy(ALICE_ONLY, "service")), "restart-api", "service",
                     id="escalate-to-service-one-person-suffices"),
        pytest.param(whitelist_text(with_autonomy(ALICE_ONLY, "service"), head=TIERED), "restart-api", "service",
                     id="escalate-to-below-a-three-person-highest-tier"),
        pytest.param(whitelist_text(SYSTEMD_ENTRY, head=TIERED), "restart-api", "global", id="group-of-three-meets-global"),
        pytest.param(whitelist_text(with_autonomy(SYSTEMD_ENTRY.replace("groups: [sre]", "people: [alice, bob]")
                                                  .replace("blast_radius: instance", "blast_radius: fleet"), "service")),
                     "restart-api", "service", id="declared-fleet-escalating-to-service"),
    ],
)
def test_entry_whose_approvers_meet_every_reachable_tier_loads(text, entry_id, escalation):
    wl = load_whitelist_bytes(text.encode(), "wl.yaml").whitelist
    assert wl.escalation_tier(entry_id) == escalation
    needed = max(wl.tiers[t].approvals for t in (wl.entry(entry_id).blast_radius, escalation, wl.approving_tier()))
    assert len(wl.allowed_approvers(entry_id)) >= needed


def test_fixing_the_approvers_turns_each_refusal_into_a_load():
    broken = whitelist_text(with_autonomy(ALICE_ONLY, "region"))
    assert refused(broken)
    fixed = broken.replace("people: [alice]", "people: [alice, bob]")
    assert load_whitelist_bytes(fixed.encode()).whitelist.entry("restart-api").autonomy.escalate_to == "region"


def test_demo_whitelist_still_loads_and_every_entry_can_be_escalated():
    wl = load_whitelist(DEMO).whitelist
    assert (wl.highest_tier(), wl.approving_tier()) == ("fleet", "service")
    for entry in wl.entries:
        assert wl.escalation_tier(entry.id) == "fleet"
        assert len(wl.allowed_approvers(entry.id)) >= 2, entry.id


def test_escalation_problem_is_reported_alongside_a_field_error():
    lines = refused(whitelist_text(ALICE_ONLY.replace("cooldown: 10m", "cooldwn: 10m")))
    assert any("cooldwn" in line for line in lines), lines
    assert any("entries[0].approvers: may be escalated" in line for line in lines), lines
