"""The SSM documents the SSM runner sends, as both sides must agree on them.

One document per system-scope ``systemd.restart`` entry (``document_name``), whose only
parameter, ``action``, takes ``show``, ``restart`` or ``journal`` (a shadow entry's only
the reads), each running exactly ``commands(unit)``. The runner
(``activities/ssm_runner.py``) sends them; ``selfheal grants ssm``
(``selfheal/grants/ssm.py``) writes them and the IAM statements to send them.
"""

from __future__ import annotations

from selfheal.activities.systemd import UNIT_PROPERTIES, systemctl
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry

PREFIX = "selfheal-restart-"
ACTIONS = ("show", "restart", "journal")
SHADOW_ACTIONS = ("show", "journal")  # a shadow entry's document: the reads only
JOURNAL_SINCE, JOURNAL_LINES = "-15min", 50


def commands(unit: str) -> dict[str, list[str]]:
    """The argv each action runs: built with ``systemd.py``'s own helpers, so ``show`` and
    ``restart`` cannot drift from what ``unit_state`` and the remediator send."""
    return {
        "show": systemctl("system", "show", "-p", ",".join(UNIT_PROPERTIES), unit),
        "restart": systemctl("system", "restart", unit),
        "journal": ["journalctl", "--unit", unit, "--output", "json", "--output-fields", "MESSAGE", "--no-pager",
                    "--since", JOURNAL_SINCE, "--lines", str(JOURNAL_LINES), "--reverse"],
    }


def system_entries(loaded: LoadedWhitelist) -> list[SystemdRestartEntry]:
    """The system-scope systemd entries, each of which gets a document: active ones first
    (by id), then shadow ones (by id), whose documents only read."""
    return sorted((e for e in loaded.whitelist.entries
                   if isinstance(e, SystemdRestartEntry) and e.target.scope == "system"),
                  key=lambda e: (e.mode == "shadow", e.id))


def allowed_actions(entry: SystemdRestartEntry) -> tuple[str, ...]:
    """The values the entry's document lets ``action`` take: a shadow entry's only read."""
    return SHADOW_ACTIONS if entry.mode == "shadow" else ACTIONS


def document_name(entry: SystemdRestartEntry, prefix: str = PREFIX) -> str:
    # Entry ids are [a-z0-9][a-z0-9_.-]{0,79}: always a valid SSM name (3-128) after the prefix.
    return f"{prefix}{entry.id}"
