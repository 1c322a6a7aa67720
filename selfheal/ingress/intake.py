"""What every ingress route shares: bad input as a ``Problem`` (a 4xx with the reason), the
request's size, type and sender checked before anything reads it (``Intake``), and the
202 answer's shape."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from selfheal.ingress import auth
from selfheal.ingress.decode import Undecodable, decode_json
from selfheal.ingress.metrics import IngressMetrics
from selfheal.ingress.settings import IngressSettings


class Problem(Exception):
    def __init__(self, status: int, reason: str, alerts: int = 1):
        # alerts: how many alerts the refusal answers, for /metrics (1 when they were not read)
        self.status, self.reason, self.alerts = status, reason, alerts


_LENGTH = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also admits "²"


class Accepted(BaseModel):
    incidents: list[dict[str, Any]]


def body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that reads its body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


class Intake:
    """What every route does with a request before it acts on it: bound its size, read its
    type, check its sender; and count what the ingress answered, for ``/metrics``."""

    def __init__(self, settings: IngressSettings, now: Callable[[], datetime], metrics: IngressMetrics | None):
        self.settings, self.now, self.metrics = settings, now, metrics

    def answered(self, source: str, answer: str, alerts: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.answered(source, answer, alerts)

    def counted(self, source: str):
        """An alert route whose refusals (4xx) are counted as ``rejected``."""

        def wrap(endpoint):
            @functools.wraps(endpoint)
            async def route(request: Request) -> JSONResponse:
                try:
                    return await endpoint(request)
                except Problem as exc:
                    self.answered(source, "rejected", exc.alerts)
                    raise

            return route

        return wrap

    async def body_of(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and _LENGTH.fullmatch(length) and int(length) > self.settings.max_body_bytes:
            raise Problem(413, f"body of {length} bytes exceeds the {self.settings.max_body_bytes}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise Problem(413, f"body exceeds the {self.settings.max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def parse(model: type[BaseModel], body: bytes, request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type and not (model is dict and "text/plain" in content_type):
            raise Problem(415, f"content-type must be application/json, got {content_type or 'none'!r}")
        try:
            data = decode_json(body)
        except Undecodable as exc:
            raise Problem(400, str(exc)) from None
        if model is dict:
            if not isinstance(data, dict):
                raise Problem(400, "body must be a JSON object")
            return data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise Problem(422, f"{where}: {first['msg']}{more}") from None

    def authenticate(self, source: str, request: Request, body: bytes) -> None:
        try:
            auth.check(source, self.settings.auth_for(source), request.headers, body, self.now().timestamp())
        except auth.Unauthorized as exc:
            raise Problem(401, str(exc)) from None
