"""When an incident pages an on-call pager, and whom: the page's life follows the incident's.

One pager alert per incident (PagerDuty deduplicates by the incident id, so a re-send or a
retried activity never opens a second one):

- opened (``trigger``) when people are needed: the approval request, and every escalation
  (no remedy, denied, verification failed, world changed, failed); at the escalation time
  of an unanswered request, the tier's next level (``paging.escalate_to_env``) is paged too;
- acknowledged when the first verified approval or rejection arrives;
- resolved when the incident ends remediated, resolved without action, or rejected. After
  denied, no_remedy, failed, verification_failed, world_changed or expired it stays open
  for a person to close;
- acknowledge and resolve go to every routing key that was paged, in order.

Reminders page no one again; an automatic incident that healed pages no one (unless the
deployment asks for a record); a shadow entry never pages; a drill pages exactly like the
request it imitates. Pure: the workflows hold a ``Pager`` and send what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfheal.contract import PageEvent
from selfheal.whitelist.fields import Paging

# A drill someone answered ends like an answered request; one nobody answered, like expired.
RESOLVES = frozenset({"remediated", "resolved_without_action", "rejected", "drill_caught", "drill_missed"})


@dataclass
class Pager:
    paged: list[str] = field(default_factory=list)  # routing keys' variables paged so far ("": the default)
    acknowledged: bool = False

    def events(self, kind: str, route: Paging | None, *, outcome: str | None = None, next_level: bool = False,
               automatic_record: bool = False) -> list[PageEvent]:
        """What to send for a notification of ``kind``; ``route`` None: this incident never pages."""
        if route is None:
            return []
        primary, severity = route.routing_key_env or "", route.severity or "error"
        if kind == "approval_requested" or (kind == "escalation" and not next_level):
            return [self._trigger([primary], severity)]
        if kind == "escalation":  # the escalation time of an unanswered request: the next level
            upper = route.escalate_to_env
            return [self._trigger([upper], severity)] if upper is not None and upper not in self.paged else []
        if kind == "answered" and self.paged and not self.acknowledged:
            self.acknowledged = True
            return [PageEvent(action="acknowledge", routing_keys=list(self.paged), severity=severity)]
        if kind == "outcome" and outcome in RESOLVES:
            if not self.paged and not (automatic_record and outcome == "remediated"):
                return []
            opened = [] if self.paged else [self._trigger([primary], "info")]
            return [*opened, PageEvent(action="resolve", routing_keys=list(self.paged), severity=severity)]
        return []

    def _trigger(self, keys: list[str], severity: str) -> PageEvent:
        for key in keys:
            if key not in self.paged:
                self.paged.append(key)
        return PageEvent(action="trigger", routing_keys=keys, severity=severity)
