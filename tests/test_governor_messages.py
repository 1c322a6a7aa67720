"""What a governor's history holds says each thing once, and what the asker records is whole.

A fleet makes many decisions and a governor's history keeps every byte of each, so its
answers leave out what the asking activity already knows (the activity puts it back,
``Reserved.in_full``). These check that nothing is lost on the way, and that an answer
the asker could not rebuild is sent whole.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from temporalio.contrib.pydantic import pydantic_data_converter

from selfheal.contract.governor import Assess, Brakes, Reserve, Reserved, reservation_key
from selfheal.whitelist import ActionRequest, Decision, Execution
from selfheal.whitelist.vocabulary import Hold

AT = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
REQUEST = ActionRequest(entry_id="reboot-web", target={"tag:Role": "web"}, params={"instance_ids": ["i-0abc"]})
DECISION = Decision.auto("reboot-web", "instance", declared_tier="instance", targets=["i-0abc"])


def wire(message) -> dict:
    """The message as a governor's history holds it."""
    return json.loads(pydantic_data_converter.payload_converter.to_payloads([message])[0].data)


def test_an_execution_the_asker_knows_is_said_by_when_and_whether_alone_and_comes_back_whole():
    full = Reserved(granted=True, decision=DECISION, whitelist_sha256="a" * 64, execution=Execution(
        entry_id="reboot-web", started_at=AT, incident_id="i-1", targets=["i-0abc"], autonomous=True))
    said = full.said_once("i-1", "reboot-web", None)
    assert "execution" not in wire(said) and wire(said)["alone"] is True
    assert said.in_full("i-1", "reboot-web", DECISION, "a" * 64) == full


def test_an_execution_the_asker_could_not_rebuild_is_sent_whole():
    # An earlier reservation on other targets than this decision's (a retry after the world changed).
    earlier = Execution(entry_id="reboot-web", started_at=AT, incident_id="i-1", targets=["i-0old"], autonomous=True)
    full = Reserved(granted=True, decision=DECISION, execution=earlier)
    assert full.said_once("i-1", "reboot-web", None) == full
    assert full.said_once("i-2", "reboot-web", None) == full  # another incident's
    assert full.in_full("i-1", "reboot-web", DECISION, "b" * 64).execution == earlier
    denied = Reserved(granted=False, decision=Decision.deny("reboot-web", "cooldown", "too soon"))
    assert denied.said_once("i-1", "reboot-web", None) == denied


def test_the_reservation_key_is_derived_unless_the_asker_names_another():
    derived = Assess(whitelist_sha256="a" * 64, request=REQUEST, incident_id="i-1", reserve=True)
    assert derived.key() == reservation_key("i-1", "reboot-web") == "i-1/act/reboot-web"
    assert "idempotency_key" not in wire(derived)
    named = Reserve(whitelist_sha256="a" * 64, request=REQUEST, incident_id="i-1", idempotency_key="i-1/other")
    assert named.key() == "i-1/other" and wire(named)["idempotency_key"] == "i-1/other"


def test_the_brakes_memo_round_trips_through_json_with_a_key_per_hold():
    at = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    hold = lambda reason: Hold(by="bob", at=at, reason=reason)  # noqa: E731
    brakes = Brakes(whitelist_sha256="a" * 64, revision=3, pause_all=hold("all"),
                    pauses={"restart-web": hold("web"), "reboot-db": hold("db")}, breakers={"restart-web": hold("2 failures")})
    memo = brakes.memo()
    assert sorted(memo) == ["brakes", "breaker:restart-web", "paused:reboot-db", "paused:restart-web"]
    assert Brakes.from_memo(json.loads(json.dumps(memo))) == brakes  # what a describe decodes
    assert Brakes.from_memo({}) is None  # no memo: the reader asks with a query
    assert [h.reason for h in brakes.brake("restart-web").paused] == ["all", "web"]
    assert brakes.brake("reboot-db").breaker is None and Brakes().memo() == {
        "brakes": {"whitelist_sha256": "", "revision": 0, "pause_all": None}}
