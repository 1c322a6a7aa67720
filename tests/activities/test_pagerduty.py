"""PagerDuty (issue 25): the page's life (pure), and the notifier against a loopback
server that speaks the Events API v2 wire format."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.notify import activity_of
from selfheal.activities.notify_pagerduty import PagerDuty, dedup_key
from selfheal.contract import Notification, PageEvent
from selfheal.whitelist.fields import Paging
from selfheal.workflows.paging import Pager
from tests.support.pagerduty import FakePagerDuty

KEY, UPPER = "R0UT1NGKEY0000000000000000000000", "UPPERLEVELKEY0000000000000000000"
ROUTE = Paging(escalate_to_env="PD_MANAGERS", severity="critical")


def life(*steps) -> list[tuple[str, list[str]]]:
    pager, sent = Pager(), []
    for kind, kw in steps:
        sent += [(e.action, e.routing_keys) for e in pager.events(kind, ROUTE, **kw)]
    return sent


# --- when it pages (pure) --------------------------------------------------------------------------

def test_an_approved_request_is_opened_acknowledged_and_resolved():
    assert life(("approval_requested", {}), ("reminder", {}), ("answered", {}), ("answered", {}),
                ("outcome", {"outcome": "remediated"})) == [
        ("trigger", [""]), ("acknowledge", [""]), ("resolve", [""])]  # a reminder and a second answer page no one


def test_at_the_escalation_time_the_next_level_is_paged_and_everyone_paged_hears_the_end():
    assert life(("approval_requested", {}), ("escalation", {"next_level": True}), ("answered", {}),
                ("outcome", {"outcome": "rejected"})) == [
        ("trigger", [""]), ("trigger", ["PD_MANAGERS"]), ("acknowledge", ["", "PD_MANAGERS"]),
        ("resolve", ["", "PD_MANAGERS"])]


@pytest.mark.parametrize("outcome", ["denied", "no_remedy", "failed", "verification_failed", "world_changed",
                                     "expired", "drill_unanswered"])
def test_an_outcome_that_needs_a_person_leaves_the_page_open(outcome):
    assert life(("approval_requested", {}), ("escalation", {}), ("outcome", {"outcome": outcome})) == [
        ("trigger", [""]), ("trigger", [""])]


def test_an_automatic_incident_that_healed_pages_no_one_unless_a_record_is_wanted():
    assert life(("outcome", {"outcome": "remediated"})) == []
    assert life(("outcome", {"outcome": "remediated", "automatic_record": True})) == [("trigger", [""]), ("resolve", [""])]


def test_a_shadow_entry_never_pages():
    assert Pager().events("approval_requested", None) == [] and Pager().events("escalation", None) == []


# --- what it sends ---------------------------------------------------------------------------------

def note(action: str, keys=("",), incident_id: str = "checkout.CheckoutErrorRate.am-1~2", **details) -> Notification:
    return Notification(incident_id=incident_id, kind="approval_requested" if action == "trigger" else "answered",
                        summary="rollback-checkout needs 1 approval(s) from alice",
                        details={"service": "checkout", "entry": "rollback-checkout", "target": "checkout:6",
                                 "tier": "service (1 approval(s))", "approvers": "alice", **details},
                        page=PageEvent(action=action, routing_keys=list(keys), severity="error"))


async def send(fake: FakePagerDuty, n: Notification, environ=None):
    async with httpx.AsyncClient() as http:
        pd = PagerDuty(http, KEY, fake.url, ui_url="http://ui.test", environ=lambda: environ or {})
        return await ActivityEnvironment().run(activity_of(pd), n)


async def test_a_trigger_says_what_a_person_needs_and_acknowledge_and_resolve_reach_the_same_alert():
    with FakePagerDuty(KEY, UPPER) as fake:
        await send(fake, note("trigger"))
        await send(fake, note("trigger", keys=["PD_MANAGERS"]), {"PD_MANAGERS": UPPER})
        await send(fake, note("acknowledge", keys=["", "PD_MANAGERS"]), {"PD_MANAGERS": UPPER})
    first = fake.events[0]
    assert first["dedup_key"] == "checkout.CheckoutErrorRate.am-1~2" and first["payload"]["severity"] == "error"
    assert first["payload"]["summary"].startswith("[checkout] ") and "on checkout:6" in first["payload"]["summary"]
    assert first["payload"]["custom_details"]["approvers"] == "alice"
    assert first["links"][0]["href"] == "http://ui.test/namespaces/default/workflows/checkout.CheckoutErrorRate.am-1~2"
    assert set(fake.alerts.values()) == {"acknowledged"} and len(fake.alerts) == 2  # one alert per key, no second


async def test_a_dedup_key_longer_than_pagerduty_takes_is_hashed_the_same_way_every_time():
    long_id = "x" * 300
    with FakePagerDuty(KEY) as fake:
        await send(fake, note("trigger", incident_id=long_id))
        await send(fake, note("trigger", incident_id=long_id))  # a retried activity: the same alert
    assert [e["dedup_key"] for e in fake.events] == [dedup_key(long_id)] * 2 and len(fake.alerts) == 1
    assert len(dedup_key(long_id)) <= 255 and dedup_key("short") == "short"


@pytest.mark.parametrize("status, headers, delay", [(429, {"Retry-After": "7"}, timedelta(seconds=7)),
                                                    (503, {}, None), (500, {"Retry-After": "99999"}, timedelta(minutes=5))])
async def test_429_and_5xx_are_retried_after_what_pagerduty_asked(status, headers, delay):
    with FakePagerDuty(KEY) as fake:
        fake.answers.append((status, headers))
        with pytest.raises(ApplicationError) as refused:
            await send(fake, note("trigger"))
        await send(fake, note("trigger"))  # the retry
    assert not refused.value.non_retryable and refused.value.next_retry_delay == delay
    assert len(fake.events) == 1


async def test_a_400_is_not_retried_and_says_why():
    with FakePagerDuty("another-key") as fake:
        with pytest.raises(ApplicationError) as refused:
            await send(fake, note("trigger"))
    assert refused.value.non_retryable and "400" in str(refused.value) and "Invalid routing key" in str(refused.value)
    assert fake.events == []


async def test_a_routing_key_variable_the_worker_lacks_is_refused_without_sending():
    with FakePagerDuty(KEY) as fake:
        with pytest.raises(ApplicationError) as refused:
            await send(fake, note("trigger", keys=["PD_PAYMENTS"]))
    assert refused.value.non_retryable and "PD_PAYMENTS is not set on this worker" in str(refused.value)
    assert fake.events == [] and fake.refused == []


async def test_everything_sent_is_redacted():
    secret = "password=S3cr3t-pw"
    with FakePagerDuty(KEY) as fake:
        await send(fake, note("trigger", evidence=f"ERROR login failed {secret}").model_copy(
            update={"summary": f"failed: {secret}"}))
    assert "S3cr3t-pw" not in str(fake.events) and "[REDACTED:password]" in str(fake.events)
