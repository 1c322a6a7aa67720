"""The incident's search attributes (what the Temporal UI's list filters on): written where
people filter, each once. The ingress sets SelfhealService at start; an incident started
any other way writes it with its first status, in the same visibility write."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from selfheal import search
from selfheal.contract import IncidentInput
from selfheal.workflows.incident import IncidentWorkflow
from tests.workflows.helpers import NotificationSink, alert, running_worker, settings_for, start_incident


def upserted(history) -> list[set[str]]:
    """The names each upsert of the history wrote."""
    return [set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            for e in history.events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]


async def test_the_service_is_written_once_at_start_by_the_ingress_or_with_the_first_status(client, task_queue, tmp_path):
    assert await search.available(client, "default", create=True)
    with NotificationSink() as sink:
        async with running_worker(client, settings_for(tmp_path, "nothing.service", task_queue, sink.url)):
            direct = await start_incident(client, task_queue, alert("DiskFull", service="db"))
            at_start = await client.start_workflow(  # as the ingress starts one
                IncidentWorkflow.run, IncidentInput(alerts=[alert("DiskFull", service="db")]), id=f"{direct.id}-ingress",
                task_queue=task_queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(search.SERVICE, "db")]))
            for handle in (direct, at_start):
                assert (await handle.result()).outcome == "no_remedy"
    for handle, first in ((direct, {search.SERVICE.name, search.STATUS.name}), (at_start, {search.STATUS.name})):
        writes = upserted(await handle.fetch_history())
        assert writes[0] == first, writes  # with "diagnosing", not on its own
        assert sum(search.SERVICE.name in w for w in writes) == (handle is direct)
        shown = (await handle.describe()).typed_search_attributes
        assert (shown.get(search.SERVICE), shown.get(search.STATUS), shown.get(search.OUTCOME)) == ("db", "done", "no_remedy")
