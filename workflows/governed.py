"""The decision an entry's governor makes: one pure function, which the governor workflow
calls (``EntryGovernorWorkflow``) and ``selfheal whitelist test`` calls with the state a
case describes, so the decision a test expects is the one an incident would get.

The policy (``selfheal.whitelist.decide``) with what the governor knows across incidents:
executions against rate limits and cooldowns, targets acted on alone, recent failures (the
incident's own never count against it), the breaker and the pauses active now; then a
model's proposal or parameters raise it to people (``agent_answer.raised``).
"""

from __future__ import annotations

from datetime import datetime

from selfheal.contract.governor import Brake
from selfheal.whitelist import ActionRequest, Decision, Execution, Whitelist, decide
from selfheal.whitelist.vocabulary import Act, GovernorView
from selfheal.workflows import agent_answer


def governed_decision(policy: Whitelist, request: ActionRequest, *, incident_id: str, now: datetime,
                      executions: list[Execution], autonomous: list[Act], failures: list[Act],
                      brake: Brake = Brake(), raised_by: list[str] = ()) -> Decision:
    view = GovernorView(
        autonomous=[a for a in autonomous if a.incident_id != incident_id],
        failures=[f for f in failures if f.incident_id != incident_id],
        breaker=brake.breaker,
        paused=[h for h in brake.paused if h.active(now)],
    )
    others = [e for e in executions if e.incident_id != incident_id]
    return agent_answer.raised(decide(policy, request, others, now, view), policy, list(raised_by))
