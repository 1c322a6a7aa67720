"""Alert payloads as each source sends them, turned into our ``Alert``, an incident key and
the alert's episode.

Inbound models ignore fields they do not use (sources add fields between versions) but
require every field selfheal relies on, and bound every one of them (how many alerts,
labels and annotations, how long a value), so a malformed or oversized payload is refused
with the field that is wrong and nothing starts.

An incident covers one **episode** of an alert, from first firing to resolution. The key
names the alert (or group, or alarm) across all its episodes; the episode is the instant
the episode began, which every re-delivery repeats:

  source        key (after the name)                          episode
  alertmanager  ``am-<fingerprint>``                          ``startsAt``
                ``am-group-<hash of groupKey>`` (key_by=group) none: a group has no start
  grafana       ``grafana-<fingerprint>``                     ``startsAt``
  sns           ``sns-<hash of the alarm ARN>``               ``StateChangeTime`` of ALARM; none for OK
  generic       ``generic-<fingerprint>`` (or a labels hash)  ``starts_at``; none when it is not sent

Every key begins with the name a person knows the alert by (``named``): its service and
alert name, made safe and bounded, as in ``checkout.CheckoutErrorRate.am-38a79d847ac5b174``.
The name comes from the labels the fingerprint already covers (a group's: from its group
key), so every re-delivery and every ingress computes the same key.

A message that names no episode goes to the key's running incident (see ``delivery``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from selfheal.evidence.redact import redact
from selfheal.contract import Alert

# Alertmanager and Grafana send this for "no end time".
_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
_KEY_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# What one alert may carry. Prometheus sets no limits, so these are generous; they exist
# so that one request cannot turn into a history Temporal refuses (2 MB per payload,
# 50 MB per history). Annotations are text for people: cut, never refused.
MAX_ALERTS = 1000
MAX_PAIRS = 128
MAX_LABEL_VALUE = 4096
MAX_ANNOTATION_VALUE = 8192
TRUNCATED = " …[truncated by selfheal]"


def _cut(value: str) -> str:
    return value if len(value) <= MAX_ANNOTATION_VALUE else value[: MAX_ANNOTATION_VALUE - len(TRUNCATED)] + TRUNCATED


Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Labels = Annotated[dict[Name, Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]], Field(max_length=MAX_PAIRS)]
Annotations = Annotated[dict[Name, Annotated[str, AfterValidator(_cut)]], Field(max_length=MAX_PAIRS)]
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels_fingerprint(labels: dict[str, str]) -> str:
    return _hash(json.dumps(labels, sort_keys=True, separators=(",", ":")))


def safe(fingerprint: str) -> str:
    """The fingerprint as it may stand in a workflow id and a visibility query.

    Anything outside ``[A-Za-z0-9._-]`` (or longer than 64) is hashed rather than
    replaced, so two different fingerprints never share a key.
    """
    return fingerprint if _KEY_SAFE.fullmatch(fingerprint) else "h" + _hash(fingerprint)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
NAME_PART = 40  # characters of the service and of the alert name kept in an id
_GROUP_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def named(labels: dict[str, str], key: str) -> str:
    """``key`` after the name a person knows the alert by: ``<service>.<alertname>.<key>``
    (either left out when the labels do not have it), each part safe for an id and a
    visibility query and at most NAME_PART characters."""
    parts = [_UNSAFE.sub("-", value).strip("-")[:NAME_PART]
             for value in (labels.get("service") or labels.get("job") or "", labels.get("alertname", ""))]
    return ".".join([p for p in parts if p] + [key])


def group_labels(group_key: str) -> dict[str, str]:
    """The labels an Alertmanager group key names (its last ``{...}``): what every message
    of the group repeats, whichever alerts it carries."""
    return dict(_GROUP_LABEL.findall(group_key.rsplit("{", 1)[-1]))


def episode_of(start: datetime) -> str:
    """A short, stable name for the episode that began at ``start`` (any time zone)."""
    return _hash(start.astimezone(timezone.utc).isoformat())[:12]


@dataclass(frozen=True)
class Routed:
    key: str                # the alert (or group, or alarm) across its episodes
    episode: str | None     # the episode it belongs to; None when the message cannot say
    alert: Alert


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PromAlert(_Inbound):
    status: Literal["firing", "resolved"]
    labels: Labels = Field(min_length=1)
    annotations: Annotations = {}
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    fingerprint: Fingerprint

    def to_alert(self, source: str) -> Alert:
        ends = None if self.endsAt is None or self.endsAt <= _ZERO_TIME else self.endsAt
        return Alert(
            source=source, status=self.status, labels=self.labels, annotations=redacted(self.annotations),
            starts_at=self.startsAt, ends_at=ends, fingerprint=self.fingerprint,
        )


class AlertmanagerPayload(_Inbound):
    """Alertmanager's webhook body, payload version 4."""

    version: Literal["4"]
    groupKey: Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
    status: Literal["firing", "resolved"]
    alerts: list[PromAlert] = Field(min_length=1, max_length=MAX_ALERTS)


class GrafanaPayload(_Inbound):
    """Grafana alerting's webhook body (unified alerting, version 1)."""

    status: Literal["firing", "resolved"]
    alerts: list[PromAlert] = Field(min_length=1, max_length=MAX_ALERTS)


class GenericAlert(_Inbound):
    model_config = ConfigDict(extra="forbid")

    status: Literal["firing", "resolved"] = "firing"
    labels: Labels = Field(min_length=1)
    annotations: Annotations = {}
    starts_at: AwareDatetime | None = None
    fingerprint: Fingerprint | None = None

    @field_validator("labels")
    @classmethod
    def _named(cls, labels: dict[str, str]) -> dict[str, str]:
        if "alertname" not in labels:
            raise ValueError("labels must include alertname")
        return labels


class GenericPayload(_Inbound):
    """selfheal's own shape, for scripts and anything without a native integration."""

    model_config = ConfigDict(extra="forbid")

    alerts: list[GenericAlert] = Field(min_length=1, max_length=MAX_ALERTS)


def redacted(annotations: dict[str, str]) -> dict[str, str]:
    """Annotations are free text (descriptions, runbook URLs, error messages): secrets in
    them are redacted before the alert enters an incident's history. Labels are left as
    they are: they identify the alert, and matchers and episodes depend on them."""
    return {key: redact(value) for key, value in annotations.items()}


def from_alertmanager(payload: AlertmanagerPayload, key_by: Literal["alert", "group"] = "alert") -> list[Routed]:
    if key_by == "group":
        # A group has no start of its own and its members change: it cannot name an episode.
        key = named(group_labels(payload.groupKey), f"am-group-{_hash(payload.groupKey)}")
        return [Routed(key, None, a.to_alert("alertmanager")) for a in payload.alerts]
    return [Routed(named(a.labels, f"am-{safe(a.fingerprint)}"), episode_of(a.startsAt), a.to_alert("alertmanager"))
            for a in payload.alerts]


def from_grafana(payload: GrafanaPayload) -> list[Routed]:
    return [Routed(named(a.labels, f"grafana-{safe(a.fingerprint)}"), episode_of(a.startsAt), a.to_alert("grafana"))
            for a in payload.alerts]


def from_generic(payload: GenericPayload, now: datetime) -> list[Routed]:
    out = []
    for a in payload.alerts:
        fingerprint = a.fingerprint or labels_fingerprint(a.labels)
        alert = Alert(
            source="generic", status=a.status, labels=a.labels, annotations=redacted(a.annotations),
            starts_at=a.starts_at or now, fingerprint=fingerprint,
        )
        episode = episode_of(a.starts_at) if a.starts_at is not None else None
        out.append(Routed(named(a.labels, f"generic-{safe(fingerprint)}"), episode, alert))
    return out


def from_sns_alarm(fields: dict) -> list[Routed]:
    alert = Alert(**{**fields, "annotations": redacted(fields.get("annotations") or {})})
    # ALARM carries the StateChangeTime of its own transition: the episode's start. OK
    # carries the time of the transition to OK, which names no episode.
    episode = episode_of(alert.starts_at) if alert.status == "firing" else None
    return [Routed(named(alert.labels, f"sns-{safe(alert.fingerprint)}"), episode, alert)]
