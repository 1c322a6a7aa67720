"""Ingress settings, built once from an explicit mapping (the environment or a test's dict)."""

from __future__ import annotations

from typing import Literal, Mapping
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from selfheal.ingress.auth import SourceAuth

SOURCES = ("alertmanager", "grafana", "generic")


class IngressSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "default"
    ui_url: str = "http://localhost:8233"
    max_body_bytes: int = 1_048_576
    alertmanager_key: Literal["alert", "group"] = "alert"
    sources: dict[str, SourceAuth] = {}
    sns_topics: list[str] = []  # empty: any topic whose messages verify
    sns_cert_url_pattern: str | None = None  # None: only https://sns.<region>.amazonaws.com/...pem
    sns_subscribe_url_pattern: str | None = None  # None: only https://sns.<region>.amazonaws.com/?...
    # A directory of SNS signing certificates, pinned where the ingress cannot reach AWS:
    # the file named like the SigningCertURL's last segment is used, and nothing is fetched.
    sns_cert_dir: str | None = None
    # Approvals at the ingress (POST /v1/approvals, Slack): the whitelist that maps people,
    # and the ingress's Ed25519 key, whose public half the whitelist lists under attestation_keys.
    whitelist: str | None = None
    attestation_key: str | None = None
    # Slack interactivity (POST /v1/slack/interactions): the app's signing secret, and a bot
    # token for opening the confirmation modal.
    slack_signing_secret: str | None = None
    slack_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    # GET /metrics for Prometheus, unauthenticated (counts by fixed labels, no alert text):
    # turn it off where the ingress's port is reachable by people who should not see traffic.
    metrics: bool = True

    def auth_for(self, source: str) -> SourceAuth:
        return self.sources.get(source, SourceAuth())

    def incident_url(self, incident_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/namespaces/{quote(self.namespace, safe='')}/workflows/{quote(incident_id, safe='')}"

    @classmethod
    def from_mapping(cls, env: Mapping[str, str], **overrides) -> "IngressSettings":
        """``SELFHEAL_INGRESS_<SOURCE>_TOKEN`` / ``_HMAC_SECRET`` per source, and the rest by name;
        every secret may come from ``NAME_FILE`` instead (``selfheal.secrets``)."""
        from selfheal.secrets import read_secret_files  # noqa: PLC0415

        env = read_secret_files(env)
        sources = {
            s: SourceAuth(token=env.get(f"SELFHEAL_INGRESS_{s.upper()}_TOKEN") or None,
                          hmac_secret=env.get(f"SELFHEAL_INGRESS_{s.upper()}_HMAC_SECRET") or None)
            for s in SOURCES
        }
        values: dict = {"sources": sources}
        for field, key in [
            ("namespace", "TEMPORAL_NAMESPACE"), ("ui_url", "SELFHEAL_UI_URL"),
            ("max_body_bytes", "SELFHEAL_INGRESS_MAX_BODY_BYTES"), ("alertmanager_key", "SELFHEAL_INGRESS_ALERTMANAGER_KEY"),
            ("sns_cert_url_pattern", "SELFHEAL_INGRESS_SNS_CERT_URL_PATTERN"),
            ("sns_subscribe_url_pattern", "SELFHEAL_INGRESS_SNS_SUBSCRIBE_URL_PATTERN"),
            ("sns_cert_dir", "SELFHEAL_INGRESS_SNS_CERT_DIR"),
            ("whitelist", "SELFHEAL_WHITELIST"), ("attestation_key", "SELFHEAL_INGRESS_ATTESTATION_KEY"),
            ("slack_signing_secret", "SELFHEAL_SLACK_SIGNING_SECRET"), ("slack_token", "SELFHEAL_SLACK_TOKEN"),
            ("slack_api_url", "SELFHEAL_SLACK_API_URL"), ("metrics", "SELFHEAL_INGRESS_METRICS"),
        ]:
            if env.get(key):
                values[field] = env[key]
        if env.get("SELFHEAL_INGRESS_SNS_TOPICS"):
            values["sns_topics"] = [t.strip() for t in env["SELFHEAL_INGRESS_SNS_TOPICS"].split(",") if t.strip()]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
