"""Read-only AWS evidence for diagnoses: ECS service events and deployments, Auto Scaling
activities, CloudWatch alarm history, CloudWatch Logs events. Nothing here writes.

Bounded whatever the caller passes, so an incident's history never carries an unbounded
blob: the window is at most 24 h (its most recent part is kept), at most 100 items (200
log events), log text at most 64 KiB. Names are checked before any call. A reader that
stopped before reading all of its window marks its last item ``truncated``. No redaction
here: the caller redacts before anything leaves the worker.

On the local simulation (moto 5.2): ECS records no service events and keeps the
service's first deployment after an update; Auto Scaling records no scaling activities
(an empty list); CloudWatch does not implement DescribeAlarmHistory (HTTP 500, which
the activity records as an ``unavailable:`` item); CloudWatch Logs filters by time and
by simple patterns, and pages with nextToken.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio.exceptions import ApplicationError

from selfheal.activities.aws_clients import AwsClients
from selfheal.activities.aws_ecs import revision
from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.remediate import out_of_policy
from selfheal.contract import AwsEvidenceRequest, EvidenceItem
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.redact import redact
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import AsgScaleEntry, Ec2RebootEntry, EcsRollbackEntry, LambdaRollbackEntry

MAX_WINDOW = timedelta(hours=24)
MAX_ITEMS, MAX_LOG_EVENTS, MAX_LOG_BYTES, MAX_LOG_PAGES = 100, 200, 64 * 1024, 20
EXCERPT = 1000
LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")


def invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidEvidenceRequest", non_retryable=True)


def cap(value: int, most: int) -> int:
    return max(1, min(value, most))


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """[since, until] in UTC, cut to its most recent 24 h (the incident is at the end)."""
    since, until = utc(since), utc(until)
    if since > until:
        raise invalid(f"window starts ({since.isoformat()}) after it ends ({until.isoformat()})")
    return max(since, until - MAX_WINDOW), until


def cut(text: str, limit: int = EXCERPT) -> str:
    # Redacted before it is cut: a secret straddling the cut must not survive as a fragment.
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mark_last(items: list[EvidenceItem], truncated: bool) -> list[EvidenceItem]:
    if truncated and items:
        items[-1] = items[-1].model_copy(update={"truncated": True})
    return items


async def ecs_service_events(clients: AwsClients, entry: EcsRollbackEntry, since: datetime, limit: int = 20) -> list[EvidenceItem]:
    t, limit, (since, _) = entry.target, cap(limit, MAX_ITEMS), window(since, datetime.now(timezone.utc))
    source = f"ecs:{t.cluster}/{t.service}"
    found = await clients.call("ecs", t.region, "describe_services", cluster=t.cluster, services=[t.service])
    if not found.get("services"):
        reason = (found.get("failures") or [{}])[0].get("reason", "not found")
        return [EvidenceItem(id=f"ecs-missing:{t.cluster}/{t.service}", source=source,
                             query=f"DescribeServices {t.cluster}/{t.service}", excerpt=cut(f"service missing: {reason}"))]
    service = found["services"][0]
    # DescribeServices returns the latest events (up to 100), newest first.
    newer = [e for e in service.get("events", []) if utc(e["createdAt"]) > since]
    query = f"DescribeServices {t.cluster}/{t.service} events since {since.isoformat()} limit {limit}"
    events = mark_last([EvidenceItem(id=f"ecs-event:{e['id']}", source=source, query=query,
                                     excerpt=cut(e.get("message", "")), timestamp=utc(e["createdAt"]))
                        for e in newer[:limit]], len(newer) > limit)
    deployments = service.get("deployments", [])
    query = f"DescribeServices {t.cluster}/{t.service} deployments limit {limit}"
    return events + mark_last([EvidenceItem(
        id=f"ecs-deployment:{d['id']}", source=source, query=query, timestamp=utc(d["createdAt"]) if d.get("createdAt") else None,
        excerpt=cut(f"{d.get('status')} {revision(d.get('taskDefinition'))} rollout {d.get('rolloutState')} "
                    f"({d.get('rolloutStateReason', '')}); running {d.get('runningCount', 0)}/{d.get('desiredCount', 0)}, "
                    f"pending {d.get('pendingCount', 0)}, failed tasks {d.get('failedTasks', 0)}"))
        for d in deployments[:limit]], len(deployments) > limit)


async def asg_activities(clients: AwsClients, entry: AsgScaleEntry, since: datetime, limit: int = 20) -> list[EvidenceItem]:
    t, limit, (since, _) = entry.target, cap(limit, MAX_ITEMS), window(since, datetime.now(timezone.utc))
    found = await clients.call("autoscaling", t.region, "describe_scaling_activities",
                               AutoScalingGroupName=t.group, MaxRecords=limit)
    query = f"DescribeScalingActivities {t.group} since {since.isoformat()} limit {limit}"
    # Newest first, one page of `limit`: more in the window only if all were newer and a token came.
    page = found.get("Activities", [])
    newer = [a for a in page if utc(a["StartTime"]) > since]
    return mark_last([EvidenceItem(
        id=f"asg-activity:{a['ActivityId']}", source=f"asg:{t.group}", query=query, timestamp=utc(a["StartTime"]),
        excerpt=cut(f"{a.get('StatusCode')}: {a.get('Description', '')}; cause: {a.get('Cause', '')}"))
        for a in newer], bool(found.get("NextToken")) and len(newer) == len(page))


async def alarm_history(clients: AwsClients, region: str, alarm_name: str, since: datetime, until: datetime,
                        limit: int = 20) -> list[EvidenceItem]:
    if not 1 <= len(alarm_name) <= 255:
        raise invalid(f"alarm name must be 1 to 255 characters, not {len(alarm_name)}")
    (since, until), limit = window(since, until), cap(limit, MAX_ITEMS)
    found = await clients.call("cloudwatch", region, "describe_alarm_history", AlarmName=alarm_name,
                               StartDate=since, EndDate=until, MaxRecords=limit)
    query = f"DescribeAlarmHistory {alarm_name} from {since.isoformat()} to {until.isoformat()} limit {limit}"
    items = []
    for h in found.get("AlarmHistoryItems", [])[:limit]:
        text = f"{h.get('HistoryItemType')}: {h.get('HistorySummary', '')}"
        try:  # HistoryData is JSON; for state updates it names the new state and why
            new = json.loads(h.get("HistoryData") or "{}").get("newState") or {}
        except (ValueError, AttributeError):
            new = {}
        if new:
            text += f"; new state {new.get('stateValue')}: {new.get('stateReason', '')}"
        stamp = utc(h["Timestamp"])
        items.append(EvidenceItem(id=f"alarm-history:{alarm_name}:{stamp.isoformat()}:{h.get('HistoryItemType')}",
                                  source=f"alarm:{alarm_name}", query=query, excerpt=cut(text), timestamp=stamp))
    return mark_last(items, bool(found.get("NextToken")))


async def log_events(clients: AwsClients, region: str, log_group: str, since: datetime, until: datetime,
                     max_bytes: int = 16_384, limit: int = 200, filter_pattern: str | None = None) -> list[EvidenceItem]:
    """Events oldest first (as FilterLogEvents returns them) until `limit` events or
    `max_bytes` of excerpt text (UTF-8), whichever comes first; a cut message fills the rest."""
    if not LOG_GROUP.match(log_group):
        raise invalid(f"not a log group name: {log_group[:100]!r}")
    if filter_pattern is not None and len(filter_pattern) > 1024:
        raise invalid("filter pattern longer than 1024 characters")
    (since, until), limit, budget = window(since, until), cap(limit, MAX_LOG_EVENTS), cap(max_bytes, MAX_LOG_BYTES)
    query = (f"FilterLogEvents {log_group} from {since.isoformat()} to {until.isoformat()} limit {limit} "
             f"max_bytes {budget}" + (f" pattern {filter_pattern!r}" if filter_pattern else ""))
    args: dict[str, Any] = {"logGroupName": log_group, "startTime": int(since.timestamp() * 1000),
                            "endTime": int(until.timestamp() * 1000), **({"filterPattern": filter_pattern} if filter_pattern else {})}
    items: list[EvidenceItem] = []
    for _ in range(MAX_LOG_PAGES):  # AWS may return empty pages with a token: bound the pages too
        page = await clients.call("logs", region, "filter_log_events", **args, limit=limit - len(items))
        events, token = page.get("events", []), page.get("nextToken")
        for i, e in enumerate(events):
            text = cut(e.get("message", "").rstrip("\n"))
            size = len(text.encode())
            if size > budget:  # fill what is left, cut on a character boundary, and stop
                text = text.encode()[:budget].decode(errors="ignore")
            budget -= len(text.encode())
            items.append(EvidenceItem(
                id=f"log:{log_group}:{e.get('logStreamName')}:{e.get('eventId')}", source=f"logs:{log_group}", query=query,
                excerpt=text, timestamp=datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc)))
            more = size > len(text.encode()) or i + 1 < len(events) or bool(token)
            if budget <= 0 or len(items) >= limit:
                return mark_last(items, more)
        if not token:
            return items
        args["nextToken"] = token
    return mark_last(items, True)


class AwsEvidence:
    def __init__(self, clients: AwsClients, loaded: LoadedWhitelist):
        self._clients = clients
        self._loaded = loaded

    async def _source(self, name: str, query: str, read) -> list[EvidenceItem]:
        """One source's items, or one item saying why it could not be read: a missing log
        group or an unimplemented call must not cost the diagnosis the other sources."""
        try:
            return await read
        except ApplicationError as exc:
            if exc.type == "InvalidEvidenceRequest":
                raise
            return [EvidenceItem(id=f"unavailable:{name}", source=name, query=query, excerpt=cut(f"unavailable ({exc.type}): {exc}"))]

    @implements(declared.read_aws_evidence)
    @heartbeating
    async def read_aws_evidence(self, request: AwsEvidenceRequest) -> list[EvidenceItem]:
        """Read-only, bounded evidence for one whitelisted AWS entry: never writes."""
        return await self.read(request)

    async def read(self, request: AwsEvidenceRequest) -> list[EvidenceItem]:
        """The same, called from another activity (the rule diagnoser)."""
        entry = self._loaded.whitelist.entry(request.entry_id)
        if not isinstance(entry, (EcsRollbackEntry, AsgScaleEntry, Ec2RebootEntry, LambdaRollbackEntry)):
            raise out_of_policy(f"entry {request.entry_id!r} is not an AWS entry of this worker's whitelist")
        t = entry.target
        if t.region is None:
            raise out_of_policy(f"entry {entry.id!r} names no region")
        window(request.since, request.until)  # refuse a reversed window before any call
        # Evidence from another account would be about other resources with the same names.
        await self._clients.require_account(t.region, t.account)
        items: list[EvidenceItem] = []
        if isinstance(entry, EcsRollbackEntry):
            items += await self._source(f"ecs:{t.cluster}/{t.service}", "DescribeServices",
                                        ecs_service_events(self._clients, entry, request.since))
        elif isinstance(entry, AsgScaleEntry):
            items += await self._source(f"asg:{t.group}", "DescribeScalingActivities",
                                        asg_activities(self._clients, entry, request.since))
        elif isinstance(entry, LambdaRollbackEntry):
            # The function's name, also when the entry gives its ARN or a qualified name.
            group = f"/aws/lambda/{t.function.split(':function:')[-1].split(':')[0]}"
            items += await self._source(f"logs:{group}", "FilterLogEvents",
                                        log_events(self._clients, t.region, group, request.since, request.until))
        if request.alarm_name:
            items += await self._source(f"alarm:{request.alarm_name}", "DescribeAlarmHistory", alarm_history(
                self._clients, t.region, request.alarm_name, request.since, request.until))
        return items

    def activities(self) -> list:
        return [self.read_aws_evidence]
