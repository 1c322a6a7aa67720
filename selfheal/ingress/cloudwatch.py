"""A CloudWatch alarm, as SNS delivers it, read into an alert (once ``sns.py`` verified the
message): its state, name, place and dimensions as labels."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from selfheal.ingress.decode import decode_json
from selfheal.ingress.sns import SnsError, aware_time, shown

_STATUS: dict[str, str | None] = {"ALARM": "firing", "OK": "resolved", "INSUFFICIENT_DATA": None}
_CORE_LABELS = frozenset({"alertname", "region", "account", "namespace", "metric"})
_ARN_REGION = re.compile(r"arn:aws[a-z-]*:cloudwatch:([a-z0-9-]+):")


def _label_name(name: str) -> str:
    label = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return "_" + label if label[:1].isdigit() else label  # label names may not start with a digit


def _text(alarm: dict[str, Any], key: str) -> str:
    value = alarm.get(key)
    return value if isinstance(value, str) else ""


def parse_cloudwatch_alarm(notification: dict[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments for ``Alert`` from a verified SNS Notification of a CloudWatch alarm.

    Returns None for INSUFFICIENT_DATA: "no data" says nothing about the symptom, so it
    neither opens nor resolves an incident. ALARM and OK of one alarm share a
    fingerprint, so an OK resolves the alert its ALARM opened.
    """
    if notification.get("Type") != "Notification":
        raise SnsError(f"expected a Notification, got Type {shown(notification.get('Type'))}")
    try:
        alarm = decode_json(notification.get("Message") or "")
    except (TypeError, ValueError):
        raise SnsError("Message is not JSON; expected a CloudWatch alarm") from None
    if not isinstance(alarm, dict):
        raise SnsError("Message is not a JSON object; expected a CloudWatch alarm")
    name = _text(alarm, "AlarmName")
    if not name:
        raise SnsError("Message is not a CloudWatch alarm: AlarmName is missing")
    state = alarm.get("NewStateValue")
    if not isinstance(state, str) or state not in _STATUS:
        raise SnsError(f"NewStateValue {shown(state)} is not ALARM, OK or INSUFFICIENT_DATA")
    status = _STATUS[state]
    if status is None:
        return None
    changed = aware_time(alarm.get("StateChangeTime"), "StateChangeTime")
    arn, account = _text(alarm, "AlarmArn"), _text(alarm, "AWSAccountId")
    # "Region" is a display name ("US East (N. Virginia)"); the ARN has the code people match on.
    arn_region = _ARN_REGION.match(arn)
    region = arn_region.group(1) if arn_region else _text(alarm, "Region")
    trigger = alarm.get("Trigger") or {}  # composite alarms have no Trigger
    if not isinstance(trigger, dict) or not isinstance(dimensions := trigger.get("Dimensions") or [], list):
        raise SnsError("Message is not a CloudWatch alarm: Trigger or Trigger.Dimensions has the wrong shape")

    labels = {"alertname": name}
    for label, value in (("region", region), ("account", account),
                         ("namespace", trigger.get("Namespace")), ("metric", trigger.get("MetricName"))):
        if isinstance(value, str) and value:
            labels[label] = value
    for dim in dimensions:
        if not (isinstance(dim, dict) and isinstance(dim.get("name"), str) and isinstance(dim.get("value"), str)):
            raise SnsError(f"Trigger.Dimensions entry {shown(dim)} is not {{name, value}} strings")
        label = _label_name(dim["name"])
        # A dimension may not overwrite the alarm's own labels (nor an earlier dimension).
        if label and label not in _CORE_LABELS:
            labels.setdefault(label, dim["value"])

    annotations = {k: v for k, v in (("description", _text(alarm, "AlarmDescription")),
                                     ("reason", _text(alarm, "NewStateReason")), ("alarm_arn", arn)) if v}
    identity = arn or f"{account}\n{region}\n{name}"
    return {
        "source": "sns",
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "starts_at": changed,
        # The message does not say when the alarm started; the change to OK is when it ended.
        "ends_at": changed if status == "resolved" else None,
        "fingerprint": hashlib.sha256(identity.encode()).hexdigest()[:16],
    }
