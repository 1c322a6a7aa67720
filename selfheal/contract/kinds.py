"""The kinds of action a whitelist entry may name, and the activities each one runs.

The trust boundary defines what an entry of each kind may say (``entry``: its target,
bounds and parameters, ``selfheal.whitelist.entries``); this table says how a workflow
reaches it: the reader that reports the target's state
(before acting, and for the AWS kinds also before deciding, to fill in the request) and
the executor that acts. A kind without a row here has no executor: its incident fails
before acting, saying so. The grants each kind needs are written per kind where they are
generated (``selfheal/grants/``); ``tests/test_contract.py`` holds those tables, and every
other per-kind table outside the contract, to this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from selfheal.contract import activities as a
from selfheal.whitelist.entries import (
    AsgScaleEntry, Ec2RebootEntry, EcsRollbackEntry, LambdaRollbackEntry, SystemdRestartEntry,
)

INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")  # what an ec2.reboot request may name
MAX_CANDIDATES = 100  # instances one read of an ec2.reboot target may report


@dataclass(frozen=True)
class Kind:
    name: str
    entry: type         # the whitelist's model of such an entry: its target, bounds and parameters
    reader: Callable    # a declared activity: ActionRequest -> the target's state
    executor: Callable  # a declared activity: RemediationInput -> RemediationResult
    aws: bool           # an AWS kind: its target names a region and an account
    reads_first: bool = False  # its request needs a read of the target before deciding (capacity, instances)
    # The parameters a model may choose for it, with their JSON types (the rest come from the
    # whitelist or the read).
    model_params: Mapping[str, str] = field(default_factory=dict)


KINDS = MappingProxyType({k.name: k for k in (
    Kind("systemd.restart", SystemdRestartEntry, a.read_unit_state, a.restart_unit, aws=False),
    Kind("ecs.rollback", EcsRollbackEntry, a.read_world, a.rollback_ecs_service, aws=True),
    Kind("asg.scale", AsgScaleEntry, a.read_world, a.scale_asg, aws=True, reads_first=True,
         model_params=MappingProxyType({"desired_capacity": "integer"})),
    Kind("ec2.reboot", Ec2RebootEntry, a.read_world, a.reboot_instances, aws=True, reads_first=True),
    Kind("lambda.rollback", LambdaRollbackEntry, a.read_world, a.rollback_lambda_alias, aws=True),
)})
