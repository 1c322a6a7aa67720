"""Telling people, for an incident and a drill alike: every notifier that hears a
notification gets it, off the incident's path, in order per notifier.

Each notifier (``selfheal.contract.activities.NOTIFIERS``) is its own activity, started at
once, so a slow or failing channel holds up neither the incident nor another channel; one
notifier's sends go out in order (a page is acknowledged after it was opened). A pager
hears what ``workflows/paging.py`` decides. The workflow waits for all of them before it
ends (``_notified``); each answer, delivered or not, is in the record.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from selfheal.contract import AuditRecord, Notification, NotificationRecord, PolicySnapshot
    from selfheal.contract.activities import HEARS, NOTIFIERS
    from selfheal.workflows import metrics, paging
    from selfheal.workflows.causes import cause_text
    from selfheal.workflows.timeouts import NOTIFY_RETRY, NOTIFY_TIMEOUT

SLACK_MESSAGE = re.compile(r"slack:([^\s:;]+:[0-9.]+)")
SLACK_LINK = re.compile(r"slack:\S+ (https://\S+)")
# How long a page waits for the Slack request to link to: long enough for a Slack that
# answers, short enough that a Slack that does not never holds up the page.
SLACK_LINK_WAIT = timedelta(seconds=10)


class Notifying:
    """Mixed into ``ApprovalDesk``; ``_open_notifications`` must run in its ``_open_desk``."""

    _audit: AuditRecord
    _snapshot: PolicySnapshot | None

    def _open_notifications(self) -> None:
        self._pager = paging.Pager()
        self._sending: dict[str, asyncio.Task] = {}  # per notifier, its latest send

    # Off the incident's path: each notifier gets its own activity, started at once, so a
    # slow or failing channel holds up neither the incident nor another channel; one
    # notifier's sends go out in order (a page is acknowledged after it was opened). The
    # workflow waits for all of them before it ends (``_notified``).

    def _notify(self, kind: str, summary: str, details: dict[str, str] | None = None, *, next_level: bool = False) -> None:
        note = Notification(incident_id=self._audit.incident_id, kind=kind, summary=summary, details=details or {})
        snapshot = self._snapshot
        for name in (snapshot.notifiers if snapshot else ["webhook"]):
            if kind not in HEARS[name]:
                continue
            if name != "pagerduty":
                self._send(name, note)
                continue
            events = self._pager.events(kind, self._page_route(), outcome=self._audit.outcome, next_level=next_level,
                                        automatic_record=bool(snapshot and snapshot.page_automatic))
            for event in events:
                self._send(name, note.model_copy(update={"page": event}))

    def _page_route(self):
        """Where this incident pages; None: never (a shadow entry)."""
        decision, whitelist = self._audit.decision, self._snapshot.whitelist if self._snapshot else None
        entry = whitelist.entry(decision.entry_id) if decision is not None and whitelist is not None else None
        if entry is not None and entry.mode == "shadow":
            return None
        if whitelist is None or decision is None:
            return paging.Paging()  # no remedy: people are needed, on the deployment's own key
        return whitelist.paging(decision.entry_id, decision.tier)

    def _send(self, name: str, note: Notification) -> None:
        previous = self._sending.get(name)
        # A page links to the Slack request it goes out with, when Slack answers in time.
        slack = self._sending.get("slack") if name == "pagerduty" and note.kind == "approval_requested" else None
        self._sending[name] = asyncio.create_task(self._deliver(name, note, previous, slack))

    async def _deliver(self, name: str, note: Notification, previous: asyncio.Task | None,
                       slack: asyncio.Task | None = None) -> None:
        if previous is not None:
            await previous
        if slack is not None:
            try:
                await workflow.wait_condition(slack.done, timeout=SLACK_LINK_WAIT)
            except asyncio.TimeoutError:
                pass
            links = [m for n in self._audit.notifications if n.kind == "approval_requested" and n.channel == "slack"
                     for m in SLACK_LINK.findall(n.detail)]
            if links:
                note = note.model_copy(update={"details": {**note.details, "slack_link": links[-1]}})
        if name == "slack" and note.kind == "outcome":
            # The Slack message of the approval request (sent before, in order), to update.
            posted = [m for n in self._audit.notifications if n.kind == "approval_requested" and n.channel == "slack"
                      for m in SLACK_MESSAGE.findall(n.detail)]
            if posted:
                note = note.model_copy(update={"details": {**note.details, "slack_message": posted[-1]}})
        what = f"{name}: {note.kind}" + (f" ({note.page.action})" if note.page else "")
        try:
            detail = await workflow.execute_activity(
                NOTIFIERS[name], note, start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=self._settings.heartbeat_timeout, retry_policy=NOTIFY_RETRY, summary=what)
            delivered = True
        except ActivityError as exc:
            detail, delivered = f"not delivered: {cause_text(exc)}", False
            metrics.undelivered(name, len(self._audit.notifications))
        self._audit.notifications.append(NotificationRecord(kind=note.kind, at=workflow.now(), delivered=delivered,
                                                            detail=detail, channel=name))

    async def _notified(self) -> None:
        """Every notification handed over (or given up on): before the workflow ends."""
        while any(not t.done() for t in self._sending.values()):
            await asyncio.gather(*self._sending.values())

