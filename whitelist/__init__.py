"""The trust boundary: the reviewed whitelist, its loader, alert matching and the pure policy.

This package imports nothing from the rest of selfheal (a test checks it), so it can be
read, reviewed and tested on its own. Installed, it is ``selfheal.whitelist``.
"""

from .loader import LoadedWhitelist, Problem, WhitelistError, load_whitelist, load_whitelist_bytes
from .matchers import matches_all
from .models import Policy, Whitelist
from .policy import decide, target_of
from .vocabulary import ActionRequest, Decision, Execution


def matching_entries(whitelist: Whitelist, labels: dict[str, str]) -> list[str]:
    """Ids of the entries whose matchers all select these alert labels, in file order."""
    return [e.id for e in whitelist.entries if matches_all(e.match, labels)]


__all__ = [
    "ActionRequest",
    "Decision",
    "Execution",
    "LoadedWhitelist",
    "Policy",
    "Problem",
    "Whitelist",
    "WhitelistError",
    "decide",
    "load_whitelist",
    "load_whitelist_bytes",
    "matching_entries",
    "target_of",
]
