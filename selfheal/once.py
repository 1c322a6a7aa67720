"""``Once``: whether this process has seen a key before, for a bounded number of keys.

Process state on purpose, and so outside ``workflows/`` (whose modules hold none: one
import serves every workflow run, ``tests/test_packaging.py``). Workflow code may ask it
only about what changes no command, such as whether a metric was already recorded
(``selfheal.workflows.metrics``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class Once:
    """The first ``first(key)`` is True, later ones False, while the key is among the
    ``keep`` most recent; thread-safe (workflow tasks run on the worker's threads)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self.keep:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)
