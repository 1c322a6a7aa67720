"""The whitelist a worker acts under now: loaded at start, swapped whole on SIGHUP.

Every activity that reads the whitelist holds this object and reads ``whitelist`` and
``sha256`` at the moment it acts, so a reload reaches them all at once. Incidents are not
touched: each keeps the snapshot (and hash) it decided under in its own history. What the
new whitelist changes for them is decided at the governor's reservation, right before
acting (``activities/governor.py``), and by the executors' own re-check.
"""

from __future__ import annotations

import logging

from selfheal.whitelist import WhitelistError, load_whitelist
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import Whitelist

log = logging.getLogger("selfheal.worker")


class CurrentWhitelist:
    """Reads like a ``LoadedWhitelist`` (``whitelist``, ``path``, ``sha256``), and reloads."""

    def __init__(self, loaded: LoadedWhitelist):
        self._loaded = loaded

    @property
    def whitelist(self) -> Whitelist:
        return self._loaded.whitelist

    @property
    def path(self) -> str:
        return self._loaded.path

    @property
    def sha256(self) -> str:
        return self._loaded.sha256

    def get(self) -> LoadedWhitelist:
        return self._loaded

    def reload(self) -> bool:
        """Load the file again. An invalid one is refused with every problem logged, and the
        current one stays; True only when a valid, different whitelist took its place."""
        try:
            loaded = load_whitelist(self._loaded.path)
        except WhitelistError as exc:
            for line in exc.lines():
                log.error("%s", line)
            log.error("reload refused: the whitelist is invalid; still acting under sha256 %s", self._loaded.sha256)
            return False
        if loaded.sha256 == self._loaded.sha256:
            log.info("reload: whitelist %s unchanged (sha256 %s)", loaded.path, loaded.sha256)
            return False
        log.warning("whitelist reloaded: %s sha256 %s -> %s (%d entries); in-flight incidents keep the hash they "
                    "decided under, and their reservations decide again under this one",
                    loaded.path, self._loaded.sha256, loaded.sha256, len(loaded.whitelist.entries))
        self._loaded = loaded
        return True
