"""Test harness: moto_server (a local AWS simulation) on loopback, with its request recorder.

One server per test session (``moto_server`` fixture in tests/conftest.py); each test that
takes ``aws_world`` gets it reset, seeded with the demo world (``selfheal.dev.aws_sim``) and
recording. ``calls()`` lists the AWS operations the server received since, read from
moto's own recorder: so a test can assert that an executor refused *without calling AWS*,
or that two runs made one write.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from selfheal.dev.aws_sim import DEMO_REGION, MotoServer, session


@dataclass
class AwsWorld:
    server: MotoServer
    recording: Path
    seeded: dict

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, service: str, region: str = DEMO_REGION):
        return session(self.url, region)(service)

    def clients(self, region: str = DEMO_REGION):
        """AwsClients for selfheal's activities, with the simulation's placeholder credentials."""
        import boto3

        from selfheal.activities.aws_clients import AwsClients
        from selfheal.dev.aws_sim import DEMO_CREDENTIALS

        s = boto3.session.Session(aws_access_key_id=DEMO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                  aws_secret_access_key=DEMO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        return AwsClients(self.url, session=s)

    def start_recording(self) -> None:
        httpx.post(f"{self.url}/moto-api/recorder/reset-recording", timeout=10).raise_for_status()
        httpx.post(f"{self.url}/moto-api/recorder/start-recording", timeout=10).raise_for_status()

    def calls(self) -> list[str]:
        """Operation names received since ``start_recording`` (``RebootInstances``, ``ecs:UpdateService`` …)."""
        text = httpx.get(f"{self.url}/moto-api/recorder/download-recording", timeout=10).text
        return [operation(json.loads(line)) for line in text.splitlines() if line.strip()]

    def writes(self) -> list[str]:
        reads = ("Describe", "Get", "List", "Filter")
        return [c for c in self.calls() if not c.split(":")[-1].startswith(reads)]


def operation(entry: dict) -> str:
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    target = headers.get("x-amz-target")
    if target:  # JSON protocols: ECS, SSM, CloudWatch Logs
        return target.split(".")[-1] if "." in target else target
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode(errors="replace")
    if isinstance(body, str) and "Action=" in body:  # query protocols: EC2, Auto Scaling, STS, IAM
        return parse_qs(body).get("Action", ["?"])[0]
    path = urlsplit(entry.get("url", "")).path
    if "/aliases/" in path or path.endswith("/aliases"):  # Lambda's REST API
        return {"GET": "GetAlias", "PUT": "UpdateAlias", "POST": "CreateAlias"}.get(entry.get("method", ""), path)
    return f"{entry.get('method')} {path}"
