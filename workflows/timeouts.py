"""Timeouts and retries of an incident's activities, in one place (the bare baselines under
``bench/`` use the same ones)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Timeouts and retries. Reads retry freely; writes retry little and never when out of policy.
# Every activity also has a heartbeat timeout (the settings' heartbeat_timeout): a worker
# killed mid-activity is noticed in seconds, not when the start-to-close timeout expires.
POLICY_TIMEOUT = timedelta(seconds=30)
POLICY_HEARTBEAT = timedelta(seconds=5)  # before the settings are known
# A reservation waits out a busy governor (Temporal admits 10 updates in flight per workflow).
RESERVE_TIMEOUT = timedelta(minutes=30)
READ_TIMEOUT = timedelta(seconds=60)
VERIFY_MARGIN = timedelta(seconds=30)
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1))
# Reading the world right before acting: a host that stays unreachable fails the incident
# with the reason instead of retrying forever.
WORLD_READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=5,
                               non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"])
REMEDIATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["OutOfPolicy", "UnreachableHost", "UnitNotFound"],
)
GOVERNOR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10)
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
