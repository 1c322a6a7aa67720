"""The trust boundary: the reviewed whitelist, its loader, alert matching and the pure policy."""

from whitelist.loader import LoadedWhitelist, Problem, WhitelistError, load_whitelist, load_whitelist_bytes
from whitelist.matchers import matches_all
from whitelist.models import Whitelist
from whitelist.policy import decide, target_of


def matching_entries(whitelist: Whitelist, labels: dict[str, str]) -> list[str]:
    """Ids of the entries whose matchers all select these alert labels, in file order."""
    return [e.id for e in whitelist.entries if matches_all(e.match, labels)]


__all__ = [
    "LoadedWhitelist",
    "Problem",
    "Whitelist",
    "WhitelistError",
    "decide",
    "load_whitelist",
    "load_whitelist_bytes",
    "matching_entries",
    "target_of",
]
