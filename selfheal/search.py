"""Custom search attributes, so incidents can be filtered in the Temporal Web UI and CLI.

``selfheal dev`` registers them on the embedded server. On a cluster, register them once:

    temporal operator search-attribute create --name SelfhealService --type Keyword
    (and likewise SelfhealEntry, SelfhealBlastRadius, SelfhealOutcome, SelfhealStatus)

Workers and the ingress check at start-up whether they exist and leave them unset if
not, so a namespace without them still runs incidents.
"""

from __future__ import annotations

import json
import re

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

SERVICE = SearchAttributeKey.for_keyword("SelfhealService")
ENTRY = SearchAttributeKey.for_keyword("SelfhealEntry")
BLAST_RADIUS = SearchAttributeKey.for_keyword("SelfhealBlastRadius")
OUTCOME = SearchAttributeKey.for_keyword("SelfhealOutcome")
STATUS = SearchAttributeKey.for_keyword("SelfhealStatus")
ALL = (SERVICE, ENTRY, BLAST_RADIUS, OUTCOME, STATUS)


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` flags that register every attribute at start."""
    return [arg for key in ALL for arg in ("--search-attribute", f"{key.name}=Keyword")]


async def available(client: Client, namespace: str, create: bool = False) -> bool:
    """Whether all attributes exist in the namespace; with ``create``, add the missing ones."""
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = [k.name for k in ALL if k.name not in listed.custom_attributes]
    if missing and create:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
            )
        )
        return True
    return not missing


# Temporal refuses a keyword whose JSON encoding exceeds 2,048 bytes, and the SDK writes
# non-ASCII characters as 6-byte escapes. A value that does not fit is shortened, never
# allowed to fail a start (that would turn an odd label into an alert retried forever).
MAX_VALUE_BYTES = 1024


def fit(value: str) -> str:
    """``value`` shortened until its JSON encoding fits a keyword attribute comfortably."""
    while len(json.dumps(value)) > MAX_VALUE_BYTES:
        value = value[: max(0, min(len(value) - 1, len(value) * MAX_VALUE_BYTES // len(json.dumps(value))))]
    return value


def service_of(labels: dict[str, str]) -> str:
    return fit(labels.get("service") or labels.get("job") or labels.get("alertname", ""))


# An incident's first stage. The ingress starts it already saying so, in the visibility
# record every start writes anyway, and the incident does not write it again: one visibility
# write fewer per incident, and a storm's incidents show their stage from the start.
FIRST_STATUS = "diagnosing"


def at_start(labels: dict[str, str]) -> TypedSearchAttributes:
    """What the ingress writes when it starts an incident for an alert with these labels."""
    return TypedSearchAttributes([SearchAttributePair(SERVICE, service_of(labels)),
                                  SearchAttributePair(STATUS, FIRST_STATUS)])


def summary_of(labels: dict[str, str], annotations: dict[str, str]) -> str:
    """The one line the Temporal UI shows for an incident (and for a drill, alike)."""
    name = labels.get("alertname", "alert")
    where = labels.get("service") or labels.get("instance") or labels.get("instance_id") or labels.get("job") or ""
    text = annotations.get("summary", "")
    return " ".join(part for part in (name, f"on {where}" if where else "", f"— {text}" if text else "") if part)[:200]


MAX_DETAILED_ALERTS = 10
MAX_DETAILS = 4_000  # characters of the static details


def details_of(alerts) -> str:
    """What fired, as the Temporal UI shows it beside the incident (its static details).

    The UI renders Markdown, and everything an alert says is untrusted text: a label or an
    annotation could carry a link ("approve here") or an image. So every word of it sits
    in a fenced code block, which the UI shows as written; a fence in the text is broken
    so it cannot close the block.
    """
    lines = []
    for alert in alerts[:MAX_DETAILED_ALERTS]:
        lines.append(f"{alert.status} since {alert.starts_at.isoformat(timespec='seconds')} (from {alert.source})")
        lines += [f"  {k}={v[:200]}" for k, v in sorted(alert.labels.items())]
        lines += [f"  {k}: {v[:500]}" for k, v in sorted(alert.annotations.items())]
    if len(alerts) > MAX_DETAILED_ALERTS:
        lines.append(f"... and {len(alerts) - MAX_DETAILED_ALERTS} more alert(s)")
    body = re.sub(r"`{3,}", lambda m: "\u200b".join(m.group(0)), "\n".join(lines))[:MAX_DETAILS]
    return "**What fired** (as the sender reported it):\n\n```text\n" + body + "\n```\n"
