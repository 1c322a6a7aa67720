"""The workflows' names, and the names of the messages they take.

Who starts or talks to an incident (the ingress, the CLI, Slack, a drill) names it from
here, never by a string of its own; the workflows register these names. The governors'
are in ``governor.py``.
"""

from __future__ import annotations

INCIDENT_WORKFLOW = "IncidentWorkflow"        # one per incident; its id is the incident key
DRILL_WORKFLOW = "DrillWorkflow"              # an approval drill beside a real incident
DIAGNOSIS_WORKFLOW = "DiagnosisAgentWorkflow"  # an incident's model diagnosis, a child: <incident id>/diagnosis

# An incident whose remediation failed (the action failed, did not heal, or found its target
# changed) ends as a failed workflow, so that the workflow list and its Failures filter show
# it. The failure is an ApplicationError of this type whose one detail is the AuditRecord,
# read back by ``selfheal.cli.common.ended_record``. Every other outcome completes.
REMEDIATION_FAILED = "RemediationFailed"
FAILED_OUTCOMES = frozenset({"failed", "verification_failed", "world_changed"})


class Incident:
    """An incident's (and a drill's) messages, by name."""

    ALERTS = "alerts"                    # signal AlertBatch: more alerts of the same episode
    RESOLVED = "resolved"                # signal: the alert resolved
    APPROVE = "approve"                  # update Approval -> str: counted, or refused with the reason
    REJECT = "reject"                    # update Rejection -> str
    APPROVE_SIGNAL = "approve_signal"    # signal Approval: for clients that cannot wait for an answer
    REJECT_SIGNAL = "reject_signal"      # signal Rejection
    EVIDENCE_VIEWED = "evidence_viewed"  # signal Viewing: someone opened the evidence
    AUDIT = "audit"                      # query -> AuditRecord
    STATUS = "status"                    # query -> str
