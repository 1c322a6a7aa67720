"""``selfheal whitelist lint``: what passes ``check`` but may mean something else than its
authors think. Each finding names ``PATH:LINE``, a rule and the reason; none refuses the
file (that is ``check``'s job): a reviewer decides.

Rules:
  overlap           two entries one alert could match (an example label set), or
  may-overlap       where a regular expression makes that undecidable here;
  unproposed        an entry no diagnosis signature proposes (with --rules);
  unreachable       a signature proposing an entry its own matchers exclude (with --rules);
  unused-tier       a tier no entry uses, nor any entry escalates to;
  idle-person       someone the whitelist names who approves nothing (in no group an
                    entry allows, and named by no entry);
  host-glob         a systemd host glob that matches none, or every one, of the hosts
                    given (--hosts: one per line);
  lone-place        an AWS account or region only one entry uses while others use
                    another (a typo?);
  verify-own-only   an entry whose verification is only the action's own check.

A finding the authors have weighed is silenced in the file itself, with the reason, by a
comment on its line or the line above: ``# lint: allow verify-own-only (why)``. The
reason stays in the reviewed file, next to what it excuses.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from selfheal.whitelist.matchers import common_labels
from selfheal.whitelist.models import Whitelist
from selfheal.whitelist.reviewed import lines_of


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


def _labels(example: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(example.items())) + "}"


def lint(whitelist: Whitelist, path: str, data: bytes, rules=None, rules_path: str = "", rules_data: bytes = b"",
         hosts: list[str] | None = None) -> list[Finding]:
    """Every finding, in file order per rule. ``rules``: a loaded DiagnosisRules, or None."""
    line = lines_of(data, path)
    entries = list(enumerate(whitelist.entries))
    found: list[Finding] = []

    def at(i: int, *deeper: str) -> int:
        return line("entries", i, *deeper)

    for n, (i, a) in enumerate(entries):
        for j, b in entries[n + 1:]:
            verdict, example = common_labels(a.match, b.match)
            if verdict == "overlap":
                found.append(Finding(path, at(j, "match"), "overlap",
                                     f"{a.id} and {b.id} can match one alert, e.g. {_labels(example)}: "
                                     f"which one acts is the diagnosis's choice, not the file's"))
            elif verdict == "may":
                found.append(Finding(path, at(j, "match"), "may-overlap",
                                     f"{a.id} and {b.id} may match one alert (regular expressions: not decided here)"))

    if rules is not None:
        rule_line = lines_of(rules_data, rules_path) if rules_data else (lambda *loc: 0)
        proposed = {s.propose for s in rules.signatures if s.propose}
        for i, e in entries:
            if e.id not in proposed:
                found.append(Finding(path, at(i), "unproposed", f"{e.id}: no diagnosis signature proposes it, so it never runs"))
        by_id = {e.id: e for _, e in entries}
        for k, sig in enumerate(rules.signatures):
            entry = by_id.get(sig.propose or "")
            if entry is not None and common_labels(sig.match, entry.match)[0] == "disjoint":
                found.append(Finding(rules_path, rule_line("signatures", k, "propose"), "unreachable",
                                     f"signature {sig.id} proposes {entry.id}, whose matchers no alert of this "
                                     f"signature can meet: the proposal is always dropped"))

    used = {e.blast_radius for _, e in entries} | {whitelist.escalation_tier(e.id) for _, e in entries}
    for name in whitelist.tiers:
        if name not in used:
            found.append(Finding(path, line("tiers", name), "unused-tier", f"tier {name}: no entry uses it"))

    allowed_groups = {g for _, e in entries for g in e.approvers.groups}
    named = {p for _, e in entries for p in e.approvers.people}
    approving = named | {p for g in allowed_groups for p in whitelist.groups.get(g, [])}
    for person in whitelist.people:
        if person not in approving:
            found.append(Finding(path, line("people", person), "idle-person",
                                 f"{person} has identities but may approve nothing (in no group an entry allows)"))

    if hosts is not None:
        for i, e in entries:
            glob = getattr(getattr(e, "target", None), "host", None)
            if glob is None:
                continue
            hits = [h for h in hosts if fnmatch.fnmatchcase(h, glob)]
            if not hits:
                found.append(Finding(path, at(i, "target", "host"), "host-glob", f"{e.id}: {glob!r} matches none of the {len(hosts)} hosts"))
            elif len(hits) == len(hosts) and len(hosts) > 1 and any(c in glob for c in "*?["):
                found.append(Finding(path, at(i, "target", "host"), "host-glob", f"{e.id}: {glob!r} matches every one of the {len(hosts)} hosts"))

    for field in ("account", "region"):
        places = [(i, e, getattr(e.target, field, None)) for i, e in entries]
        counts = Counter(v for _, _, v in places if v is not None)
        if len(counts) > 1:
            for i, e, value in places:
                if value is not None and counts[value] == 1:
                    others = ", ".join(sorted(str(v) for v in counts if v != value))
                    found.append(Finding(path, at(i, "target", field), "lone-place",
                                         f"{e.id}: {field} {value} is used by this entry only (others: {others}); a typo?"))

    for i, e in entries:
        if e.verify.http is None and not e.verify.alert_resolves:
            found.append(Finding(path, at(i, "verify"), "verify-own-only",
                                 f"{e.id}: verified only by the action's own check; an http check or "
                                 f"alert_resolves would say whether the symptom cleared"))
    text = data.decode("utf-8", "replace").splitlines()
    rules_text = rules_data.decode("utf-8", "replace").splitlines()
    return [f for f in found if not _allowed(rules_text if f.path == rules_path and rules_path != path else text, f)]


def _allowed(lines: list[str], f: Finding) -> bool:
    near = lines[max(f.line - 2, 0):f.line]  # its line and the one above (lines count from 1)
    return any(f"lint: allow {f.rule}" in line for line in near)


def read_hosts(path: Path) -> list[str]:
    return [h.strip() for h in path.read_text().splitlines() if h.strip() and not h.lstrip().startswith("#")]
