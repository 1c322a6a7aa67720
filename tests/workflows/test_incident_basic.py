"""Incidents that end before anything could act: no systemd needed."""

from selfheal.contract import AuditRecord
from tests.workflows.helpers import NotificationSink, alert, running_worker, settings_for, start_incident


async def test_alert_matching_no_entry_ends_as_no_remedy(client, task_queue, tmp_path):
    with NotificationSink() as sink:
        settings = settings_for(tmp_path, "nothing.service", task_queue, sink.url)
        async with running_worker(client, settings):
            handle = await start_incident(client, task_queue, alert("DiskFull"))
            record: AuditRecord = await handle.result()
    assert record.outcome == "no_remedy"
    assert record.matched_entries == []
    assert record.remediation is None
    assert record.whitelist_sha256 and len(record.whitelist_sha256) == 64
    assert sink.kinds(handle.id) == ["escalation", "outcome"]


async def test_an_alert_storm_is_counted_past_the_records_cap(client, task_queue, tmp_path):
    from selfheal.workflows.incident import MAX_RECORDED_ALERTS

    storm = [alert("DiskFull", fingerprint="same") for _ in range(MAX_RECORDED_ALERTS + 50)]
    settings = settings_for(tmp_path, "nothing.service", task_queue, None)
    async with running_worker(client, settings):
        handle = await start_incident(client, task_queue, *storm)
        record: AuditRecord = await handle.result()
    assert len(record.alerts) == MAX_RECORDED_ALERTS
    assert record.alerts_not_recorded == 50
