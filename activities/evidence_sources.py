"""Read-only evidence by source ref: the reads a diagnosis may run, as reviewed configuration.

A diagnosis (a language model among them) asks for evidence by ref only
(``journal:demo-api``, ``file:checkout-log``, ``prom:error-rate``, ``aws``); what each ref
reads is fixed in the evidence configuration (``selfheal.evidence.config``). A ref that
is not configured is refused. Whether a ref is *allowed* for an incident is the caller's
check (``EvidenceConfig.allowed`` over the alert's candidate entries and signatures);
this module enforces it itself only for ``aws``, which reads the named entry's target.

Every read is bounded by the configuration's ``bounds``: the window is cut to its most
recent ``window``; at most ``max_lines`` items (lines, series, events) and ``max_bytes``
of excerpt text (UTF-8) come back, the most recent lines of a log kept; the last item is
marked ``truncated`` when the reader stopped before reading everything it could have.
Every excerpt, and the text of every ``query``, passes through the redactor before it
leaves this module.

- ``journal:ID``: ``journalctl --reverse`` through the runner (so remote hosts work): the
  unit's most recent messages in the window, one item per message with journald's
  timestamp, id ``journal:ID:<hash of the entry's cursor>`` (the same in every read).
- ``file:ID``: the last ``max_lines`` lines, continued into ``PATH.1`` (the logrotate
  predecessor) when the file holds fewer; read backwards from the end, so a log of
  gigabytes costs what its tail costs. Lines that start with an ISO-8601 timestamp
  outside the window are dropped, and so are the untimestamped lines that follow them
  (a traceback belongs to its line); a timestamp without a zone is this machine's local
  time. ``host: localhost`` is read here; another host via the runner with
  ``tail -n N -- PATH`` (no shell). A missing or unreadable file is one item saying so.
- ``prom:ID``: Prometheus's HTTP API, the template rendered with the first firing
  alert's labels (``selfheal.evidence.promql.render``); an instant query at the window's
  end, or a range query over its last ``range``. One item per series, id
  ``prom:ID:<hash of its labels>``. A refused query (HTTP 4xx, ``status: error``) is an
  item saying so; HTTP 5xx and connection problems are a retryable error; redirects are
  never followed.
- ``aws``: ``AwsEvidence.read`` for the entry (``alarmname`` label -> alarm history).

How a log's end is read is ``log_tail.py``'s; what a Prometheus answer says,
``prom_series.py``'s. This module decides what is read, bounds it and redacts it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.log_tail import leading_timestamp, local_tail, recent_journal, remote_tail
from selfheal.activities.prom_series import iso, series_items
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import as_activity_errors
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.config import FileSource, JournalSource, LoadedEvidence, PromQuery
from selfheal.evidence.promql import render
from selfheal.contract import EXCERPT, Alert, EvidenceItem, EvidenceRead
from selfheal.evidence.redact import DEFAULT, Redactor
from selfheal.whitelist.durations import format_duration

MAX_RESPONSE = 8 * 1024 * 1024      # bytes of a Prometheus answer
PROM_TIMEOUT = 15.0                 # seconds, per request (Prometheus is told 10s)
LOCAL_HOSTS = frozenset({"localhost"})



def refused(message: str) -> ApplicationError:
    return ApplicationError(message, type="EvidenceRefused", non_retryable=True)


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def cut(text: str, limit: int = EXCERPT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EvidenceSources:
    def __init__(self, loaded: LoadedEvidence, runner: CommandRunner, http: httpx.AsyncClient, aws=None,
                 redactor: Redactor = DEFAULT):
        self._loaded = loaded
        self._runner = runner
        self._http = http
        self._aws = aws  # AwsEvidence, when the worker has AWS clients
        self._redact = redactor

    @property
    def config(self):
        return self._loaded.config

    @implements(declared.read_evidence)
    @heartbeating
    async def read_evidence(self, request: EvidenceRead) -> list[EvidenceItem]:
        """Read one configured evidence source, bounded and redacted. Never writes."""
        return await self.read(request.ref, request.entry_id, request.alerts, request.since, request.until)

    def activities(self) -> list:
        return [self.read_evidence]

    async def read(self, ref: str, entry_id: str | None, alerts: list[Alert], since: datetime,
                   until: datetime) -> list[EvidenceItem]:
        cfg = self.config
        try:
            source = cfg.source(ref)
        except KeyError:
            raise refused(f"{str(ref)[:100]!r} is not a configured evidence source; the configured sources are: "
                          f"{', '.join(cfg.refs())}") from None
        since, until = utc(since), utc(until)
        if since > until:
            raise refused(f"the window starts ({iso(since)}) after it ends ({iso(until)})")
        since = max(since, until - cfg.bounds.window)
        ident = ref.split(":", 1)[-1]
        if isinstance(source, JournalSource):
            return await self._journal(ident, source, since, until)
        if isinstance(source, FileSource):
            return await self._file(ident, source, since, until)
        if isinstance(source, PromQuery):
            return await self._prom(ident, source, alerts, since, until)
        return await self._aws_read(entry_id, alerts, since, until)

    # --- bounding -----------------------------------------------------------------------

    def _lines(self, source: str, query: str, lines: list[tuple[str, str, datetime | None]],
               more: bool) -> list[EvidenceItem]:
        """Items for log lines ``(id, text, timestamp)``, oldest first: redacted, and the
        most recent ones kept within ``max_lines`` and ``max_bytes``."""
        b = self.config.bounds
        texts = self._redact.lines([text for _, text, _ in lines])
        budget, kept, truncated = b.max_bytes, [], more
        for (ident, _, when), text in zip(reversed(lines), reversed(texts)):
            if len(kept) >= b.max_lines or budget <= 0:
                truncated = True
                break
            text = cut(text)
            size = len(text.encode())
            if size > budget:  # what is left of the budget holds this line's head, and no more
                text = text.encode()[:budget].decode(errors="ignore")
                kept.append(EvidenceItem(id=ident, source=source, query=query, excerpt=text, timestamp=when))
                truncated = True
                break
            budget -= size
            kept.append(EvidenceItem(id=ident, source=source, query=query, excerpt=text, timestamp=when))
        kept.reverse()
        return self._mark(kept, truncated)

    def _in_order(self, items: list[EvidenceItem], newest: bool = False) -> list[EvidenceItem]:
        """Items in the order given (redacted), within ``max_lines`` and ``max_bytes``: the
        first ones, or with ``newest`` the most recent by timestamp (untimestamped first)."""
        b = self.config.bounds
        order = list(range(len(items)))
        if newest:
            far = datetime.max.replace(tzinfo=timezone.utc)
            order.sort(key=lambda i: utc(items[i].timestamp) if items[i].timestamp else far, reverse=True)
        budget, chosen, truncated = b.max_bytes, {}, False
        for i in order:
            if len(chosen) >= b.max_lines or budget <= 0:
                truncated = True
                break
            item = items[i]
            text = cut(self._redact.text(item.excerpt))
            size = len(text.encode())
            if size > budget:
                text, truncated = text.encode()[:budget].decode(errors="ignore"), True
            budget -= len(text.encode())
            chosen[i] = item.model_copy(update={"excerpt": text, "query": self._redact.text(item.query)})
            if truncated:
                break
        return self._mark([chosen[i] for i in sorted(chosen)], truncated)

    @staticmethod
    def _mark(items: list[EvidenceItem], truncated: bool) -> list[EvidenceItem]:
        if truncated and items:
            items[-1] = items[-1].model_copy(update={"truncated": True})
        return items

    def _bounds_text(self) -> str:
        b = self.config.bounds
        return f"limit {b.max_lines} max_bytes {b.max_bytes}"

    # --- journald -----------------------------------------------------------------------

    async def _journal(self, ident: str, src: JournalSource, since: datetime, until: datetime) -> list[EvidenceItem]:
        limit = self.config.bounds.max_lines
        with as_activity_errors():
            # One entry more than kept: whether more lay in the window.
            entries = await recent_journal(self._runner, src.host, src.scope, src.unit, since, until, limit + 1)
        more = len(entries) > limit
        entries = entries[-limit:]
        query = self._redact.text(f"journalctl --{src.scope} unit {src.unit} on {src.host} from {iso(since)} "
                                  f"to {iso(until)} {self._bounds_text()}")
        return self._lines(f"journal:{ident}", query,
                           [(f"journal:{ident}:{key}", message, when) for key, message, when in entries], more)

    # --- files ----------------------------------------------------------------------------

    async def _file(self, ident: str, src: FileSource, since: datetime, until: datetime) -> list[EvidenceItem]:
        limit = self.config.bounds.max_lines
        query = self._redact.text(f"tail -n {limit} {src.path} (then {src.path}.1) on {src.host} "
                                  f"from {iso(since)} to {iso(until)} {self._bounds_text()}")
        if src.host in LOCAL_HOSTS:
            found = await asyncio.to_thread(local_tail, src.path, limit)
        else:
            found = await remote_tail(self._runner, src.host, src.path, limit)
        if isinstance(found, str):
            return [EvidenceItem(id=f"file:{ident}:unavailable", source=f"file:{ident}", query=query,
                                 excerpt=cut(self._redact.text(found)))]
        lines, more = found
        kept: list[tuple[str, str, datetime | None]] = []
        keep, older = True, False
        for i, line in enumerate(lines):
            when = leading_timestamp(line)
            if when is not None:
                keep = since <= when <= until
                older = older or when < since
            if keep:
                kept.append((f"file:{ident}:{i}", line, when))
        # Reading further back would only find older lines once one before the window was seen.
        return self._lines(f"file:{ident}", query, kept, more and not older)

    # --- Prometheus -------------------------------------------------------------------------

    async def _prom(self, ident: str, q: PromQuery, alerts: list[Alert], since: datetime,
                    until: datetime) -> list[EvidenceItem]:
        prom = self.config.prometheus
        assert prom is not None  # a prom: ref exists only with a prometheus section
        firing = [a for a in alerts if a.status == "firing"] or list(alerts)
        try:
            query = render(q.query, firing[0].labels if firing else {})
        except ValueError as exc:
            raise refused(f"prom:{ident}: {exc}") from None
        source = f"prom:{ident}"
        if q.range is not None:
            start = until - min(q.range, self.config.bounds.window)
            step = q.effective_step
            path = "/api/v1/query_range"
            params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{until.timestamp():.3f}",
                      "step": f"{step.total_seconds():g}", "timeout": "10s"}
            asked = (f"prometheus query_range {query} from {iso(start)} to {iso(until)} step "
                     f"{format_duration(step)} limit {self.config.bounds.max_lines} series")
        else:
            path = "/api/v1/query"
            params = {"query": query, "time": f"{until.timestamp():.3f}", "timeout": "10s"}
            asked = f"prometheus query {query} at {iso(until)} limit {self.config.bounds.max_lines} series"
        asked = self._redact.text(asked)

        def error_item(text: str) -> list[EvidenceItem]:
            return [EvidenceItem(id=f"{source}:error", source=source, query=asked, excerpt=cut(self._redact.text(text)))]

        try:
            async with self._http.stream("GET", prom.url + path, params=params, follow_redirects=False,
                                         timeout=PROM_TIMEOUT) as response:
                body, too_big = bytearray(), False
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE:
                        too_big = True
                        break
        except httpx.TransportError as exc:
            raise ApplicationError(f"{source}: Prometheus unreachable: {type(exc).__name__}: {exc}",
                                   type="PrometheusUnavailable") from None
        status = response.status_code
        if 300 <= status < 400:
            return error_item(f"Prometheus answered HTTP {status} (a redirect to "
                              f"{response.headers.get('location', '?')[:200]}); redirects are not followed")
        if too_big:
            return error_item(f"Prometheus's answer is larger than {MAX_RESPONSE} bytes; not read")
        try:
            answer = json.loads(bytes(body))
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if status >= 500:
                raise ApplicationError(f"{source}: Prometheus answered HTTP {status}", type="PrometheusUnavailable")
            return error_item(f"Prometheus answered HTTP {status} without a JSON body")
        if answer.get("status") != "success":
            text = f"({answer.get('errorType', '?')}) {answer.get('error', '')}"
            if status >= 500 and answer.get("errorType") != "execution":
                raise ApplicationError(f"{source}: Prometheus answered HTTP {status}: {text[:500]}",
                                       type="PrometheusUnavailable")
            return error_item(f"Prometheus refused the query (HTTP {status}): {text}")
        return self._in_order(series_items(source, asked, answer.get("data") or {}))

    # --- AWS ----------------------------------------------------------------------------------

    async def _aws_read(self, entry_id: str | None, alerts: list[Alert], since: datetime,
                        until: datetime) -> list[EvidenceItem]:
        from selfheal.contract import AwsEvidenceRequest

        if self._aws is None:
            raise refused("aws: this worker has no AWS evidence reader")
        if not entry_id:
            raise refused("aws: name the whitelist entry whose AWS target to read")
        if "aws" not in self.config.allowed([entry_id]):
            raise refused(f"aws: the evidence configuration does not allow aws for {entry_id[:100]!r}")
        firing = [a for a in alerts if a.status == "firing"] or list(alerts)
        alarm = next((a.labels.get("alarmname") or a.labels.get("AlarmName") for a in firing
                      if a.labels.get("alarmname") or a.labels.get("AlarmName")), None)
        items = await self._aws.read(AwsEvidenceRequest(entry_id=entry_id, since=since, until=until, alarm_name=alarm))
        return self._in_order(list(items), newest=True)

