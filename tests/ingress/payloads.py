"""Webhook bodies as Alertmanager, Grafana and our generic endpoint send them."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Alertmanager repeats an alert with the startsAt it first fired at.
STARTED = datetime.now(timezone.utc) - timedelta(minutes=1)


def incident(key: str, started: datetime = STARTED) -> str:
    """The incident id the ingress gives the episode of ``key`` that began at ``started``."""
    from selfheal.ingress.delivery import incident_id
    from selfheal.ingress.parsers import episode_of

    return incident_id(key, episode_of(datetime.fromisoformat(_iso(started))))


def key(tail: str, alertname: str = "IngressTest", service: str | None = "ingress") -> str:
    """The incident key the ingress gives an alert with these labels (``prom_alert``'s by
    default) and this source-specific ``tail`` (``am-<fingerprint>``): its name first."""
    from selfheal.ingress.parsers import named

    return named({"alertname": alertname, **({"service": service} if service else {})}, tail)


def prom_alert(alertname="IngressTest", fingerprint="a1b2c3d4e5f60718", status="firing", **labels) -> dict:
    start = STARTED
    return {
        "status": status,
        "labels": {"alertname": alertname, "service": "ingress", **labels},
        "annotations": {"summary": "test"},
        "startsAt": _iso(start),
        "endsAt": _iso(datetime.now(timezone.utc)) if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.test/graph",
        "fingerprint": fingerprint,
    }


def alertmanager(*alerts: dict, status="firing") -> dict:
    return {
        "version": "4", "groupKey": '{}:{alertname="IngressTest"}', "truncatedAlerts": 0, "status": status,
        "receiver": "selfheal", "groupLabels": {"alertname": "IngressTest"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.test", "alerts": list(alerts) or [prom_alert()],
    }


def grafana(*alerts: dict) -> dict:
    return {
        "receiver": "selfheal", "status": "firing", "orgId": 1, "alerts": list(alerts) or [prom_alert()],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://grafana.test",
        "version": "1", "groupKey": "{}", "truncatedAlerts": 0, "title": "[FIRING:1]", "state": "alerting", "message": "",
    }


def generic(**labels) -> dict:
    return {"alerts": [{"labels": {"alertname": "IngressTest", **labels}, "annotations": {"summary": "generic"}}]}


def body(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def sign(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


async def incidents_for(client, key: str) -> list[str]:
    """Ids of every incident (any episode, any status) the ingress opened for ``key``."""
    return sorted([w.id async for w in client.list_workflows(f'WorkflowId STARTS_WITH "{key}~"')])
