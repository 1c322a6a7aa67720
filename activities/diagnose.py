"""The rule-based diagnoser: signatures over alert labels and log lines -> a Diagnosis.

Diagnosis is read-only, so it is retried freely. Its output is untrusted like any other
input: the workflow accepts a proposal only if it is one of the whitelist entries the
alert matched, and the policy never sees the confidence.

A signature says: for alerts matching these labels, look in this log (a journald unit
or a file) for lines matching this pattern; if found (or if no log is named), the
hypothesis holds and proposes this whitelist entry.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.redact import DEFAULT, Redactor, redact
from selfheal.activities.runner import CommandRunner, UnreachableHost
from selfheal.activities.systemd import SystemdError, journal_lines
from selfheal.contract import Alert, DiagnoseInput, Diagnosis, Evidence, Hypothesis, Param
from selfheal.whitelist.durations import PositiveDuration
from selfheal.whitelist.matchers import matches_all, parse_matcher
from selfheal.whitelist.reviewed import load_reviewed

log = logging.getLogger(__name__)
MAX_EVIDENCE_LINES = 20


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:  # not a ValueError: pydantic would let it escape the loader's report
        raise ValueError(f"invalid regular expression: {exc}") from None
    return text


def _matcher(text: str) -> str:
    return str(parse_matcher(text))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JournalSource(_Strict):
    unit: str
    scope: Literal["system", "user"] = "system"
    host: str = "localhost"


class Signature(_Strict):
    id: str
    summary: str
    match: list[Annotated[str, AfterValidator(_matcher)]] = Field(min_length=1)
    journal: JournalSource | None = None
    file: str | None = None
    pattern: Annotated[str, AfterValidator(_regex)] | None = None
    propose: str | None = None
    params: dict[str, Param] = {}
    # Cite the proposed AWS entry's own evidence (ECS events and deployments, scaling
    # activities, the function's logs; alarm history when the alert names an alarm).
    aws_evidence: bool = False
    confidence: float = Field(default=0.5, ge=0, le=1)


class DiagnosisRules(_Strict):
    lookback: PositiveDuration = timedelta(minutes=15)
    max_lines: int = Field(default=2000, ge=1, le=100_000)
    signatures: list[Signature] = []


def load_rules(path: str | Path) -> DiagnosisRules:
    """The rules file, or ``ReviewedFileError`` (a ValueError) with every problem at its line."""
    return load_reviewed(path, DiagnosisRules, what="the diagnosis rules format")


class RuleDiagnoser:
    def __init__(self, rules: DiagnosisRules, runner: CommandRunner, aws_evidence=None, redactor: Redactor = DEFAULT):
        self._rules = rules
        self._runner = runner
        self._aws = aws_evidence  # AwsEvidence, when the worker has AWS clients
        # Everything read here enters the incident's history, and from there notifications
        # and chat: secrets in log lines are redacted before they leave this activity.
        self._redact = redactor

    @implements(declared.diagnose)
    @heartbeating
    async def diagnose(self, inp: DiagnoseInput) -> Diagnosis:
        return await self.diagnosis(inp)

    async def diagnosis(self, inp: DiagnoseInput) -> Diagnosis:
        """The diagnosis itself; ``read_source`` reads each signature's lines (a subclass
        serves them from elsewhere: ``selfheal whitelist test`` from its cases file)."""
        firing = [a for a in inp.alerts if a.status == "firing"] or inp.alerts
        since = min(a.starts_at for a in firing) - self._rules.lookback
        cache: dict[str, list[str] | str] = {}
        unavailable: list[str] = []  # evidence that could not be read: said in the rationale, never fatal
        hypotheses: list[tuple[float, Hypothesis]] = []
        for sig in self._rules.signatures:
            if not any(matches_all(sig.match, a.labels) for a in firing):
                continue
            evidence = [Evidence(source="labels", lines=self._redact.lines(_label_lines(firing)))]
            source, lines = await self.read_source(sig, since, cache)
            if source is not None and isinstance(lines, str):
                unavailable.append(f"{source}: {lines}")
                continue
            if source is not None:
                hits = [line for line in lines if re.search(sig.pattern or "", line)]
                if not hits:
                    log.info("signature %s: no line in %s matches", sig.id, source)
                    continue
                evidence.append(Evidence(source=source, lines=self._redact.lines(hits[-MAX_EVIDENCE_LINES:])))
            if sig.aws_evidence and sig.propose:
                cited = await self._aws_evidence(sig.propose, firing, since, cache)
                if isinstance(cited, str):
                    unavailable.append(cited)
                else:
                    evidence.extend(cited)
            hypotheses.append((sig.confidence, Hypothesis(id=sig.id, summary=sig.summary, evidence=evidence, proposal=sig.propose)))

        hypotheses.sort(key=lambda pair: -pair[0])  # stable: ties keep file order
        best = next(((c, h) for c, h in hypotheses if h.proposal), None)
        if best is None:
            rationale = "no signature with a proposed remedy matched the alerts and their logs" + _unread(unavailable)
            return Diagnosis(hypotheses=[h for _, h in hypotheses], rationale=rationale, confidence=0.0)
        confidence, chosen = best
        sig = next(s for s in self._rules.signatures if s.id == chosen.id)
        rationale = f"signature {chosen.id!r} matched: {chosen.summary}" + _unread(unavailable)
        return Diagnosis(
            hypotheses=[h for _, h in hypotheses],
            proposal=chosen.proposal,
            params=dict(sig.params),
            rationale=rationale,
            confidence=confidence,
        )

    async def _aws_evidence(self, entry_id: str, firing: list[Alert], since, cache: dict) -> list[Evidence] | str:
        """The proposed AWS entry's evidence, one ``Evidence`` per source, each line citing
        its item id; or why it could not be read."""
        from selfheal.contract import AwsEvidenceRequest

        if self._aws is None:
            return f"aws:{entry_id}: this worker has no AWS evidence reader"
        key = f"aws:{entry_id}"
        if key not in cache:
            alarm = next((a.labels.get("alarmname") or a.labels.get("AlarmName") for a in firing
                          if a.labels.get("alarmname") or a.labels.get("AlarmName")), None)
            try:
                items = await self._aws.read(AwsEvidenceRequest(entry_id=entry_id, since=since,
                                                                until=datetime.now(timezone.utc), alarm_name=alarm))
            except ApplicationError as exc:
                cache[key] = f"{key}: {exc}"
            else:
                by_source: dict[str, list[str]] = {}
                for item in items:
                    by_source.setdefault(item.source, []).append(f"[{item.id}] {item.excerpt}")
                cache[key] = [Evidence(source=f"aws:{source}", lines=self._redact.lines(lines[-MAX_EVIDENCE_LINES:]))
                              for source, lines in by_source.items()]
        return cache[key]

    async def read_source(self, sig: Signature, since, cache: dict) -> tuple[str | None, list[str] | str]:
        """The log lines of the signature's source, or a string saying why they could not be read."""
        if sig.journal:
            key = f"journal:{sig.journal.host}:{sig.journal.unit}"
            if key not in cache:
                try:
                    cache[key] = await journal_lines(
                        self._runner, sig.journal.host, sig.journal.scope, sig.journal.unit, since, self._rules.max_lines
                    )
                except (SystemdError, UnreachableHost) as exc:
                    cache[key] = str(exc)
            return key, cache[key]
        if sig.file:
            key = f"file:{sig.file}"
            if key not in cache:
                cache[key] = _tail(Path(sig.file), self._rules.max_lines)
            return key, cache[key]
        return None, []


def _unread(unavailable: list[str]) -> str:
    return f" (evidence unavailable: {redact('; '.join(unavailable))})" if unavailable else ""


def _label_lines(alerts: list[Alert]) -> list[str]:
    seen: list[str] = []
    for alert in alerts:
        line = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        if line not in seen:
            seen.append(line)
    return seen


def _tail(path: Path, limit: int) -> list[str]:
    # Streams the file keeping only the last lines: a log of gigabytes must not be read into memory.
    try:
        with path.open(errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=limit)]
    except FileNotFoundError:
        return []
