"""Alert payloads as each source sends them, turned into our ``Alert`` and an incident key.

Inbound models ignore fields they do not use (sources add fields between versions) but
require every field selfheal relies on, so a malformed payload is refused with the
field that is wrong and nothing starts.

Incident keys (the workflow id):

  alertmanager  ``am-<fingerprint>`` per alert (default), or ``am-group-<hash of groupKey>``
                with ``key_by="group"``: one incident per Alertmanager group
  grafana       ``grafana-<fingerprint>`` per alert
  sns           ``sns-<hash of the alarm ARN>`` per CloudWatch alarm
  generic       ``generic-<fingerprint>``; the fingerprint defaults to a hash of the labels
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from selfheal.models import Alert

# Alertmanager and Grafana send this for "no end time".
_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
_KEY_SAFE = str.maketrans({c: "-" for c in " /\\:\t\n"})


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels_fingerprint(labels: dict[str, str]) -> str:
    return _hash(json.dumps(labels, sort_keys=True, separators=(",", ":")))


def _safe(fingerprint: str) -> str:
    return fingerprint.translate(_KEY_SAFE)[:64]


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PromAlert(_Inbound):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = {}
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    fingerprint: str = Field(min_length=1, max_length=128)

    def to_alert(self, source: str) -> Alert:
        ends = None if self.endsAt is None or self.endsAt <= _ZERO_TIME else self.endsAt
        return Alert(
            source=source, status=self.status, labels=self.labels, annotations=self.annotations,
            starts_at=self.startsAt, ends_at=ends, fingerprint=self.fingerprint,
        )


class AlertmanagerPayload(_Inbound):
    """Alertmanager's webhook body, payload version 4."""

    version: Literal["4"]
    groupKey: str
    status: Literal["firing", "resolved"]
    alerts: list[PromAlert] = Field(min_length=1)


class GrafanaPayload(_Inbound):
    """Grafana alerting's webhook body (unified alerting, version 1)."""

    status: Literal["firing", "resolved"]
    alerts: list[PromAlert] = Field(min_length=1)


class GenericAlert(_Inbound):
    model_config = ConfigDict(extra="forbid")

    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = {}
    starts_at: AwareDatetime | None = None
    fingerprint: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("labels")
    @classmethod
    def _named(cls, labels: dict[str, str]) -> dict[str, str]:
        if "alertname" not in labels:
            raise ValueError("labels must include alertname")
        return labels


class GenericPayload(_Inbound):
    """selfheal's own shape, for scripts and anything without a native integration."""

    model_config = ConfigDict(extra="forbid")

    alerts: list[GenericAlert] = Field(min_length=1, max_length=1000)


Keyed = list[tuple[str, Alert]]


def from_alertmanager(payload: AlertmanagerPayload, key_by: Literal["alert", "group"] = "alert") -> Keyed:
    out = []
    for a in payload.alerts:
        key = f"am-group-{_hash(payload.groupKey)}" if key_by == "group" else f"am-{_safe(a.fingerprint)}"
        out.append((key, a.to_alert("alertmanager")))
    return out


def from_grafana(payload: GrafanaPayload) -> Keyed:
    return [(f"grafana-{_safe(a.fingerprint)}", a.to_alert("grafana")) for a in payload.alerts]


def from_generic(payload: GenericPayload, now: datetime) -> Keyed:
    out = []
    for a in payload.alerts:
        fingerprint = a.fingerprint or labels_fingerprint(a.labels)
        alert = Alert(
            source="generic", status=a.status, labels=a.labels, annotations=a.annotations,
            starts_at=a.starts_at or now, fingerprint=fingerprint,
        )
        out.append((f"generic-{_safe(fingerprint)}", alert))
    return out


def from_sns_alarm(fields: dict) -> Keyed:
    alert = Alert(**fields)
    return [(f"sns-{_safe(alert.fingerprint)}", alert)]
