"""The policy as the workflow sees it: the loaded whitelist and the settings, recorded once
in the incident's history."""

from __future__ import annotations

from selfheal.activities.heartbeat import heartbeating
from selfheal.contract import IncidentSettings, LoadPolicy, PolicySnapshot
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.whitelist.loader import LoadedWhitelist


class PolicyActivities:
    def __init__(self, loaded: LoadedWhitelist, settings: IncidentSettings, search_attributes: bool = False,
                 evidence=None, notifiers: tuple[str, ...] = ("webhook",), routing_key: bool = False,
                 page_automatic: bool = False):
        # PagerDuty pages with the worker's own routing key, or where the (current) whitelist names one.
        self._notifiers, self._routing_key, self._page_automatic = list(notifiers), routing_key, page_automatic
        self._search_attributes = search_attributes
        self._evidence = evidence  # EvidenceCatalog, when the worker has an evidence configuration
        self._loaded = loaded
        self._settings = settings

    @implements(declared.load_policy)
    @heartbeating
    async def load_policy(self, inp: LoadPolicy) -> PolicySnapshot:
        # One read of the current whitelist, so the excerpt and its hash are of one file.
        loaded = self._loaded.get()
        return PolicySnapshot(
            whitelist=loaded.whitelist.excerpt(inp.label_sets), sha256=loaded.sha256, source=loaded.path,
            settings=self._settings, search_attributes=self._search_attributes, evidence=self._evidence,
            notifiers=[*self._notifiers, *(["pagerduty"] if self._routing_key or loaded.whitelist.pages() else [])],
            page_automatic=self._page_automatic,
        )
