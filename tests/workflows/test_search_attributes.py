"""The incident's search attributes (what the Temporal UI's list filters on): written where
people filter, each once. The ingress sets SelfhealService and the first status at start,
so the incident does not write them again; an incident started any other way writes both
with its first status, in one visibility write."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from selfheal import search
from selfheal.contract import IncidentInput
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import STARTED, NotificationSink, alert, running_worker, settings_for, start_incident


def upserted(history) -> list[set[str]]:
    """The names each upsert of the history wrote."""
    return [set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            for e in history.events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]


async def test_the_service_is_written_once_at_start_by_the_ingress_or_with_the_first_status(client, task_queue, tmp_path):
    assert await search.available(client, "default", create=True)
    with NotificationSink() as sink:
        async with running_worker(client, settings_for(tmp_path, "nothing.service", task_queue, sink.url)):
            direct = await start_incident(client, task_queue, alert("DiskFull", service="db"))
            firing = alert("DiskFull", service="db")
            at_start = await client.start_workflow(  # as the ingress starts one (selfheal.ingress.delivery)
                IncidentWorkflow.run, IncidentInput(alerts=[firing]), id=f"{direct.id}-ingress",
                task_queue=task_queue, search_attributes=search.at_start(firing.labels))
            STARTED.append(("test_an_incident_the_ingress_started_writes_no_status_visibility_already_holds", at_start))
            assert (await at_start.describe()).typed_search_attributes.get(search.STATUS) == search.FIRST_STATUS
            for handle in (direct, at_start):
                assert (await handle.result()).outcome == "no_remedy"
    direct_writes, ingress_writes = upserted(await direct.fetch_history()), upserted(await at_start.fetch_history())
    # Started directly: the service with "diagnosing", not on its own; then the outcome.
    assert direct_writes == [{search.SERVICE.name, search.STATUS.name}, {search.STATUS.name, search.OUTCOME.name}], direct_writes
    # Started by the ingress: visibility already holds both; the one write is the outcome.
    assert ingress_writes == [{search.STATUS.name, search.OUTCOME.name}], ingress_writes
    for handle in (direct, at_start):
        shown = (await handle.describe()).typed_search_attributes
        assert (shown.get(search.SERVICE), shown.get(search.STATUS), shown.get(search.OUTCOME)) == ("db", "done", "no_remedy")


def test_the_list_shows_a_stage_only_while_the_incident_runs():
    from selfheal.cli.incidents import shown_status

    assert shown_status(None, search.FIRST_STATUS, "running") == "diagnosing"  # as the ingress started it
    assert shown_status(None, search.FIRST_STATUS, "terminated") == "terminated"  # ended before any outcome
    assert shown_status("remediated", "done", "completed") == "remediated"
    assert shown_status("failed", "done", "failed") == "failed"
    assert shown_status(None, None, "running") == "running"  # no search attributes on this namespace
