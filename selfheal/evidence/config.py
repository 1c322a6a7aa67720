"""The reviewed evidence configuration: which reads a diagnosis may run, and nothing else.

Over 300 lines on purpose: the file's models and the checks across them are one schema,
as the whitelist's are.

A language model that diagnoses an incident picks evidence by **source ref** only
(``journal:demo-api``, ``file:checkout-log``, ``prom:error-rate``, ``aws``). It never
names a file, a URL or a query: those are written here, reviewed like the whitelist next
to which this file lives, and hashed (SHA-256 of the file's bytes) into every incident
that reads through them. ``allow`` says which refs the diagnosis of a whitelist entry
(or a diagnosis signature) may read; ``catalog`` is what the model is shown of them:
ids, kinds and descriptions, never a path, URL or query text.

Example::

    bounds: {window: 1h, max_bytes: 16384, max_lines: 200}
    files:
      checkout-log: {path: /var/log/checkout/app.log, host: localhost}
    journals:
      demo-api: {unit: selfheal-demo-api.service, scope: user, host: localhost}
    prometheus:
      url: http://127.0.0.1:9090
      queries:
        error-rate:
          description: 5xx per second by service
          query: 'sum(rate(http_requests_total{service=$service, code=~"5.."}[5m]))'
          range: 30m     # a range query over the last 30m; without it, an instant query
          step: 1m
    allow:
      rollback-checkout: [prom:error-rate, file:checkout-log, aws]
      restart-demo-api: [journal:demo-api]

PromQL templates and what an alert may put in them: ``promql.py``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from selfheal.evidence.promql import placeholders
from selfheal.whitelist.durations import PositiveDuration, format_duration

ID_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
REF = re.compile(r"^(?:aws|(?P<kind>file|journal|prom):(?P<id>[a-z0-9][a-z0-9_.\-]{0,63}))$")
KINDS = {"file": "file", "journal": "journal", "prom": "prometheus", "aws": "aws"}

MAX_WINDOW = timedelta(hours=24)
MAX_BYTES, MAX_LINES = 65_536, 2_000
MAX_POINTS = 1_000  # range / step of a range query (Prometheus itself refuses > 11,000)
# A systemd unit name: never an option (no leading '-'), no spaces, no globs.
UNIT = re.compile(r"^[A-Za-z0-9_:.\\@][A-Za-z0-9_:.\\@\-]{0,255}$")
HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,252}$")


# --- the configuration -----------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _window(value: timedelta) -> timedelta:
    if value > MAX_WINDOW:
        raise ValueError(f"must be at most 24h, got {format_duration(value)}")
    return value


def _absolute_path(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains NUL")
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, not {value!r}")
    if ".." in path.parts:
        raise ValueError("must not contain '..'")
    return value


def _unit(value: str) -> str:
    if not UNIT.match(value):
        raise ValueError(f"not a systemd unit name: {value[:100]!r}")
    return value


def _host(value: str) -> str:
    if not HOST.match(value):
        raise ValueError(f"not a host name: {value[:100]!r}")
    return value


def _template(value: str) -> str:
    placeholders(value)  # refuses a template it cannot read
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, not {value[:200]!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value.rstrip("/")


Window = Annotated[PositiveDuration, AfterValidator(_window)]
Description = Annotated[str, Field(max_length=500)]


class Bounds(_Strict):
    """Caps on every read: the window before the incident, the excerpt bytes, the items."""

    window: Window = timedelta(hours=1)
    max_bytes: int = Field(default=16_384, ge=1, le=MAX_BYTES)
    max_lines: int = Field(default=200, ge=1, le=MAX_LINES)


class FileSource(_Strict):
    path: Annotated[str, Field(max_length=4096), AfterValidator(_absolute_path)]
    host: Annotated[str, AfterValidator(_host)] = "localhost"
    description: Description = ""


class JournalSource(_Strict):
    unit: Annotated[str, AfterValidator(_unit)]
    scope: Literal["system", "user"] = "system"
    host: Annotated[str, AfterValidator(_host)] = "localhost"
    description: Description = ""


class PromQuery(_Strict):
    description: Description
    query: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_template)]
    range: Window | None = None
    step: PositiveDuration | None = None

    @model_validator(mode="after")
    def _points(self) -> "PromQuery":
        if self.step is not None and self.range is None:
            raise ValueError("step is only for range queries: give a range too")
        if self.range is not None:
            step = self.step or timedelta(minutes=1)
            if step > self.range:
                raise ValueError(f"step ({format_duration(step)}) is longer than the range ({format_duration(self.range)})")
            if self.range / step > MAX_POINTS:
                raise ValueError(f"range / step is {self.range / step:.0f} points per series; at most {MAX_POINTS}")
        return self

    @property
    def effective_step(self) -> timedelta | None:
        return None if self.range is None else (self.step or timedelta(minutes=1))

    @property
    def labels(self) -> list[str]:
        return placeholders(self.query)


class PrometheusSource(_Strict):
    url: Annotated[str, AfterValidator(_http_url)]
    queries: dict[Id, PromQuery] = {}


class EvidenceConfig(_Strict):
    bounds: Bounds = Bounds()
    files: dict[Id, FileSource] = {}
    journals: dict[Id, JournalSource] = {}
    prometheus: PrometheusSource | None = None
    # whitelist entry id or diagnosis signature id -> the source refs its diagnosis may read
    allow: dict[Id, list[str]] = {}

    @model_validator(mode="after")
    def _refs_exist(self) -> "EvidenceConfig":
        problems = allow_problems(self.model_dump())
        if problems:  # located: the loader reports each at its line (ctx "problems")
            summary = "; ".join(f"allow.{loc[1]}[{loc[2]}]: {msg}" for loc, msg in problems)
            raise PydanticCustomError("evidence_refs", "{summary}", {"summary": summary, "problems": problems})
        return self

    @classmethod
    def load(cls, path: str | Path) -> "LoadedEvidence":
        """Read, hash and validate a file (see ``_load``); ValueError on any problem."""
        return _load(cls, path)

    def refs(self) -> list[str]:
        """Every ref this configuration defines, sorted (``aws`` always: it reads the
        whitelist entry's own AWS target)."""
        prom = self.prometheus.queries if self.prometheus else {}
        return sorted([f"file:{i}" for i in self.files] + [f"journal:{i}" for i in self.journals]
                      + [f"prom:{i}" for i in prom] + ["aws"])

    def source(self, ref: str) -> FileSource | JournalSource | PromQuery | None:
        """The configured source a ref names; None for ``aws``. KeyError if not configured."""
        m = REF.match(ref) if isinstance(ref, str) else None
        if m is None:
            raise KeyError(ref)
        kind, ident = m.group("kind"), m.group("id")
        if kind is None:
            return None
        table: Mapping[str, Any] = {"file": self.files, "journal": self.journals,
                                    "prom": self.prometheus.queries if self.prometheus else {}}[kind]
        if ident not in table:
            raise KeyError(ref)
        return table[ident]

    def allowed(self, ids: Iterable[str]) -> list[str]:
        """The refs allowed for any of these whitelist entry / signature ids: sorted, unique."""
        return sorted({ref for i in ids for ref in self.allow.get(i, [])})

    def unknown_keys(self, known_ids: Iterable[str]) -> list[str]:
        """``allow`` keys that are neither a whitelist entry nor a signature among ``known_ids``
        (for a worker to refuse a configuration that names something that does not exist)."""
        known = set(known_ids)
        return sorted(k for k in self.allow if k not in known)

    def catalog(self, refs: Iterable[str]) -> list[dict[str, Any]]:
        """What the model is shown of these refs: id, kind, description, the bounds, and for
        Prometheus the alert labels the query needs and its range. Never a path, host, unit,
        URL or query text. ValueError on a ref that is not configured."""
        b, out = self.bounds, []
        window = format_duration(b.window)
        for ref in refs:
            try:
                src = self.source(ref)
            except KeyError:
                raise ValueError(f"unknown evidence source {ref!r}") from None
            kind = KINDS[ref.split(":", 1)[0]]
            entry: dict[str, Any] = {"ref": ref, "kind": kind}
            if kind == "file":
                entry["description"] = src.description or "the most recent lines of a log file, rotated predecessor included"
                entry["reads"] = f"at most {b.max_lines} lines ({b.max_bytes} bytes) from the last {window}"
            elif kind == "journal":
                entry["description"] = src.description or "the most recent messages of a systemd unit's journal"
                entry["reads"] = f"at most {b.max_lines} lines ({b.max_bytes} bytes) from the last {window}"
            elif kind == "prometheus":
                entry["description"] = src.description
                if src.range is not None:
                    span = format_duration(min(src.range, b.window))
                    entry["reads"] = (f"a range query over the last {span}, one point every "
                                      f"{format_duration(src.effective_step)}; at most {b.max_lines} series")
                else:
                    entry["reads"] = f"an instant query at the end of the window; at most {b.max_lines} series"
                entry["labels"] = src.labels
            else:
                entry["description"] = ("the whitelisted AWS target's recent history: ECS service events and "
                                        "deployments, Auto Scaling activities, Lambda logs, alarm history")
                entry["reads"] = f"at most {b.max_lines} items ({b.max_bytes} bytes) from the last {window}"
            out.append(entry)
        return out


@dataclass(frozen=True)
class LoadedEvidence:
    config: EvidenceConfig
    path: str
    sha256: str  # of the file's bytes, like the whitelist's: any edit changes it

    def record(self):
        """The ``EvidenceCatalog`` an incident records: the hash, every allowed source as the
        model may see it (id, kind, description, bounds), and what each id may read."""
        from selfheal.contract import EvidenceCatalog, SourceInfo

        refs = sorted({ref for refs in self.config.allow.values() for ref in refs})
        return EvidenceCatalog(sha256=self.sha256, source=str(self.path),
                               sources=[SourceInfo(**{k: v for k, v in item.items() if k in SourceInfo.model_fields})
                                        for item in self.config.catalog(refs)],
                               allow={k: list(v) for k, v in self.config.allow.items()})


def load(path: str | Path) -> LoadedEvidence:
    return EvidenceConfig.load(path)


def allow_problems(doc: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Each ``allow`` ref names a configured source, each problem with its location.

    Reads the plain document and tolerates malformed parts, so the loader reports these
    in the same pass as field errors (the model's own check runs only on valid fields).
    """
    def ids(section: Any) -> list[str]:
        return [k for k in section if isinstance(k, str)] if isinstance(section, dict) else []

    prom = doc.get("prometheus")
    known = sorted([f"file:{i}" for i in ids(doc.get("files"))] + [f"journal:{i}" for i in ids(doc.get("journals"))]
                   + [f"prom:{i}" for i in ids(prom.get("queries") if isinstance(prom, dict) else None)] + ["aws"])
    allow = doc.get("allow") if isinstance(doc.get("allow"), dict) else {}
    return [(("allow", key, i), f"unknown source {ref!r}; the configured sources are: {', '.join(known)}")
            for key, refs in allow.items() if isinstance(refs, list)
            for i, ref in enumerate(refs) if isinstance(ref, str) and ref not in known]


def _key_message(err: Mapping[str, Any]) -> str | None:
    # A mapping key here is an id: say what one looks like rather than quote the pattern.
    return f"not a valid id: ids match {ID_PATTERN}" if err["loc"][-1:] == ("[key]",) else None


def _load(cls: type[EvidenceConfig], path: str | Path) -> LoadedEvidence:
    """Read, hash and validate the file (``selfheal.whitelist.reviewed``): ``ReviewedFileError``,
    a ValueError, with every problem as ``PATH:LINE: field: message`` (``allow.rollback-checkout[1]``),
    a key given twice in one mapping included."""
    from selfheal.whitelist.reviewed import load_reviewed, read_reviewed

    data = read_reviewed(path)
    config = load_reviewed(data, cls, path=str(path), what="the evidence configuration",
                           checks=(allow_problems,), describe=_key_message)
    return LoadedEvidence(config, str(path), hashlib.sha256(data).hexdigest())
