"""boto3 clients for the AWS executors, readers and verifiers, and what their errors mean.

Credentials come from boto3's standard chain (environment, shared files, instance or
task role); the region comes from each whitelist target and the endpoint URL from the
worker's configuration (``SELFHEAL_AWS_ENDPOINT_URL``; boto3 also honours
``AWS_ENDPOINT_URL``). boto3 is synchronous, so calls run in threads: the activity's
heartbeats keep going on the event loop meanwhile. Clients are thread-safe once made;
they are made under a lock.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from temporalio.exceptions import ApplicationError

# Errors that no retry can fix: wrong target, missing resource, no permission.
PERMANENT = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
    "InvalidClientTokenId", "AuthFailure", "ClusterNotFoundException", "ServiceNotFoundException",
    "ServiceNotActiveException", "ResourceNotFoundException", "InvalidParameterException", "ValidationError",
    "ValidationException", "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "ClientException",
}


class AwsClients:
    def __init__(self, endpoint_url: str | None = None, session=None, simulation: str | None = None):
        import boto3
        from botocore.config import Config

        # Said in every result when the "AWS" is a local simulation, so an audit record can
        # never be mistaken for a change to real infrastructure.
        self.simulation = simulation
        self._session = session or boto3.session.Session()
        self._endpoint_url = endpoint_url
        self._config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=30)
        self._clients: dict[tuple[str, str], Any] = {}
        self._accounts: dict[str, str] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str):
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, endpoint_url=self._endpoint_url,
                                                          config=self._config)
            return self._clients[key]

    async def call(self, api: str, region: str, operation: str, /, **kwargs) -> dict[str, Any]:
        client = self.client(api, region)
        with aws_errors(f"{api}:{operation}"):
            return await asyncio.to_thread(getattr(client, operation), **kwargs)

    async def require_account(self, region: str, account: str | None) -> None:
        """Refuse to go on unless these credentials act in ``account``: an entry reviewed
        for one account must never act in another, whatever credentials the worker has."""
        if account is None:
            raise ApplicationError("the entry names no account (a whitelist recorded before AWS targets named one)",
                                   type="OutOfPolicy", non_retryable=True)
        if region not in self._accounts:
            identity = await self.call("sts", region, "get_caller_identity")
            self._accounts[region] = identity["Account"]
        if self._accounts[region] != account:
            raise ApplicationError(
                f"the worker's AWS credentials are for account {self._accounts[region]}, not the entry's {account}",
                type="WrongAccount", non_retryable=True)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn botocore failures into Temporal errors: retry only what a retry could fix."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        raise ApplicationError(f"{what}: {code}: {message}", type=f"Aws.{code or 'Error'}",
                               non_retryable=code in PERMANENT) from None
    except (NoCredentialsError, NoRegionError) as exc:  # configuration: a retry finds the same nothing
        raise ApplicationError(f"{what}: {exc}", type="Aws.Configuration", non_retryable=True) from None
    except EndpointConnectionError as exc:
        raise ApplicationError(f"{what}: {exc}", type="Aws.Unreachable") from None
    except BotoCoreError as exc:
        raise ApplicationError(f"{what}: {type(exc).__name__}: {exc}", type="Aws.Error") from None
