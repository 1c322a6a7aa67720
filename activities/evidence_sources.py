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
  alert's labels (``selfheal.evidence.config.render``); an instant query at the window's
  end, or a range query over its last ``range``. One item per series, id
  ``prom:ID:<hash of its labels>``. A refused query (HTTP 4xx, ``status: error``) is an
  item saying so; HTTP 5xx and connection problems are a retryable error; redirects are
  never followed.
- ``aws``: ``AwsEvidence.read`` for the entry (``alarmname`` label -> alarm history).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from selfheal.activities.heartbeat import heartbeating
from selfheal.activities.runner import CommandRunner
from selfheal.activities.systemd import Scope, SystemdError, as_activity_errors
from selfheal.contract import activities as declared
from selfheal.contract.activities import implements
from selfheal.evidence.config import FileSource, JournalSource, LoadedEvidence, PromQuery, render
from selfheal.contract import EXCERPT, Alert, EvidenceItem, EvidenceRead
from selfheal.evidence.redact import DEFAULT, Redactor
from selfheal.whitelist.durations import format_duration

CHUNK = 64 * 1024
MAX_SCAN = 8 * 1024 * 1024          # bytes of one file read backwards: bounds a file of endless lines
MAX_RESPONSE = 8 * 1024 * 1024      # bytes of a Prometheus answer
PROM_TIMEOUT = 15.0                 # seconds, per request (Prometheus is told 10s)
LOCAL_HOSTS = frozenset({"localhost"})
_TIMESTAMP = re.compile(
    r"^\[?(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d{1,9}))?"
    r"\s?(?P<zone>Z|[+-]\d{2}:?\d{2})?(?![\d:])"
)


def refused(message: str) -> ApplicationError:
    return ApplicationError(message, type="EvidenceRefused", non_retryable=True)


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def cut(text: str, limit: int = EXCERPT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def leading_timestamp(line: str) -> datetime | None:
    """The ISO-8601 timestamp a log line starts with (``2026-11-26T10:00:00.123Z``,
    ``[2026-11-26 10:00:00,123+0100]``), in UTC; a timestamp without a zone is local time."""
    m = _TIMESTAMP.match(line)
    if m is None:
        return None
    frac = (m["frac"] or "")[:6]
    zone = m["zone"] or ""
    if zone == "Z":
        zone = "+00:00"
    elif zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        t = datetime.fromisoformat(f"{m['date']}T{m['time']}{'.' + frac if frac else ''}{zone}")
    except ValueError:
        return None
    return t.astimezone(timezone.utc)  # naive: taken as local time


def tail_lines(path: Path, n: int, scan: int = MAX_SCAN) -> tuple[list[bytes], bool]:
    """The last ``n`` lines of a file, oldest first, read backwards from its end (at most
    ``scan`` bytes), and whether anything precedes them. A final newline ends the last line."""
    if n <= 0:
        return [], path.stat().st_size > 0
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        pos, chunks, newlines = end, [], 0
        # One newline more than lines wanted, past the one that ends the file.
        while pos > 0 and end - pos < scan and newlines <= n:
            step = min(CHUNK, pos, scan - (end - pos))
            pos -= step
            handle.seek(pos)
            chunk = handle.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
        data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        return [], pos > 0
    lines = data.split(b"\n")
    more = pos > 0
    if more:
        lines = lines[1:]  # its start lies before what was read
    if len(lines) > n:
        lines, more = lines[-n:], True
    return lines, more


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


def _labels_text(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _num(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(float(t), timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def recent_journal(runner: CommandRunner, host: str, scope: Scope, unit: str, since: datetime, until: datetime,
                         limit: int) -> list[tuple[str, str, datetime | None]]:
    """The unit's most recent ``limit`` messages in [since, until], oldest first, as
    ``(key, message, timestamp)``; ``key`` is a short hash of the entry's journal cursor,
    the same whenever the entry is read.

    Not ``systemd.journal_lines``: with ``--since``, journalctl seeks to the window's start
    and ``--lines`` keeps the *first* entries after it (systemd 252); ``--reverse`` reads
    from the end, so the lines kept are the most recent ones.
    """
    unit_flag = "--user-unit" if scope == "user" else "--unit"
    argv = [
        "journalctl", unit_flag, unit, "--output", "json", "--output-fields", "MESSAGE", "--no-pager",
        "--since", f"@{int(since.timestamp())}", "--until", f"@{int(until.timestamp()) + 1}",
        "--lines", str(limit), "--reverse",
    ]
    result = await runner.run(host, argv, timeout=60)
    if not result.ok:
        raise SystemdError(f"journalctl for {unit} failed ({result.returncode}): {result.stderr.strip()[:500]}")
    entries = []
    for raw in result.stdout.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
            message = bytes(message).decode(errors="replace")
        if not isinstance(message, str):
            continue
        try:
            when = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, timezone.utc)
        except (KeyError, TypeError, ValueError):
            when = None
        if when is not None and not since <= when <= until:
            continue
        cursor = str(entry.get("__CURSOR") or f"{when}:{message}")
        entries.append((hashlib.sha256(cursor.encode()).hexdigest()[:12], message, when))
    entries.reverse()
    return entries


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
            raise refused(f"the window starts ({_iso(since)}) after it ends ({_iso(until)})")
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
        query = self._redact.text(f"journalctl --{src.scope} unit {src.unit} on {src.host} from {_iso(since)} "
                                  f"to {_iso(until)} {self._bounds_text()}")
        return self._lines(f"journal:{ident}", query,
                           [(f"journal:{ident}:{key}", message, when) for key, message, when in entries], more)

    # --- files ----------------------------------------------------------------------------

    async def _file(self, ident: str, src: FileSource, since: datetime, until: datetime) -> list[EvidenceItem]:
        limit = self.config.bounds.max_lines
        query = self._redact.text(f"tail -n {limit} {src.path} (then {src.path}.1) on {src.host} "
                                  f"from {_iso(since)} to {_iso(until)} {self._bounds_text()}")
        if src.host in LOCAL_HOSTS:
            found = await asyncio.to_thread(self._local_tail, src.path, limit)
        else:
            found = await self._remote_tail(src.host, src.path, limit)
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

    @staticmethod
    def _local_tail(path: str, limit: int) -> tuple[list[str], bool] | str:
        """Lines oldest first (the predecessor's, then the file's), whether more precede them;
        or why the file could not be read."""
        current, previous = Path(path), Path(path + ".1")
        out: list[str] = []
        try:
            have_current = current.exists()
            if have_current:
                if not stat.S_ISREG(current.stat().st_mode):
                    return "not a regular file"
                lines, more = tail_lines(current, limit)
                out = [_decode(line) for line in lines]
            else:
                more = False
            if not more and len(out) < limit and previous.is_file():
                older, more = tail_lines(previous, limit - len(out))
                out = [_decode(line) for line in older] + out
            elif not have_current:
                return "the file does not exist (nor its rotated predecessor .1)"
        except PermissionError:
            return "permission denied"
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"
        return out, more

    async def _remote_tail(self, host: str, path: str, limit: int) -> tuple[list[str], bool] | str:
        async def tail(p: str, n: int) -> list[str] | None:
            with as_activity_errors():
                result = await self._runner.run(host, ["tail", "-n", str(n), "--", p], timeout=60)
            if not result.ok:
                if "No such file" in result.stderr:
                    return None
                raise _TailFailed(f"tail failed ({result.returncode}): {result.stderr.strip()[:300]}")
            text = result.stdout[:-1] if result.stdout.endswith("\n") else result.stdout
            return [line.rstrip("\r") for line in text.split("\n")] if text else []

        try:
            current = await tail(path, limit + 1)  # one more: whether more precede them
            lines = current or []
            more = len(lines) > limit
            lines = lines[-limit:]
            if not more and len(lines) < limit:
                need = limit - len(lines)
                older = await tail(path + ".1", need + 1)
                if older is None and current is None:
                    return "the file does not exist (nor its rotated predecessor .1)"
                older = older or []
                more = len(older) > need
                lines = older[-need:] + lines
        except _TailFailed as exc:
            return str(exc)
        return lines, more

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
            asked = (f"prometheus query_range {query} from {_iso(start)} to {_iso(until)} step "
                     f"{format_duration(step)} limit {self.config.bounds.max_lines} series")
        else:
            path = "/api/v1/query"
            params = {"query": query, "time": f"{until.timestamp():.3f}", "timeout": "10s"}
            asked = f"prometheus query {query} at {_iso(until)} limit {self.config.bounds.max_lines} series"
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
        return self._series(source, asked, answer.get("data") or {})

    def _series(self, source: str, asked: str, data: dict) -> list[EvidenceItem]:
        kind, result = data.get("resultType"), data.get("result")
        items: list[EvidenceItem] = []
        if kind in ("scalar", "string") and isinstance(result, list) and len(result) == 2:
            items.append(EvidenceItem(id=f"{source}:{kind}", source=source, query=asked,
                                      excerpt=f"{kind} {_num(result[1])}", timestamp=_when(result[0])))
        elif kind in ("vector", "matrix") and isinstance(result, list):
            for series in result:
                if not isinstance(series, dict):
                    continue
                metric = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
                digest = hashlib.sha256(json.dumps(metric, sort_keys=True).encode()).hexdigest()[:12]
                labels = _labels_text(metric)
                if kind == "vector":
                    t, v = series.get("value") or (0, "")
                    text, when = f"{labels} = {_num(v)} at {_iso(_when(t))}", _when(t)
                else:
                    text, when = self._matrix_text(labels, series.get("values") or [])
                # Redacted before it is cut (in _in_order): a cut secret could slip past the patterns.
                items.append(EvidenceItem.model_construct(id=f"{source}:{digest}", source=source, query=asked,
                                                          excerpt=text, timestamp=when, truncated=False))
        else:
            items.append(EvidenceItem(id=f"{source}:error", source=source, query=asked,
                                      excerpt=f"unexpected result type {str(kind)[:50]!r}"))
        return self._in_order(items)

    @staticmethod
    def _matrix_text(labels: str, values: list) -> tuple[str, datetime | None]:
        if not values:
            return f"{labels}: no points", None
        floats = []
        for _, v in values:
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if x == x:  # not NaN
                floats.append(x)
        last_t, last_v = values[-1]
        head = (f"{labels}: last {_num(last_v)} at {_iso(_when(last_t))}; "
                + (f"min {_num(min(floats))}, max {_num(max(floats))}, " if floats else "")
                + f"{len(values)} points from {_iso(_when(values[0][0]))}; values oldest first: ")
        shown: list[str] = []
        room = EXCERPT - len(head) - 2
        for _, v in reversed(values):  # the most recent values are kept when they do not all fit
            word = _num(v)
            if sum(len(w) + 1 for w in shown) + len(word) + 1 > room:
                shown.append("…")
                break
            shown.append(word)
        return head + " ".join(reversed(shown)), _when(last_t)

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


class _TailFailed(Exception):
    pass
