"""Start reading here: everything that crosses a process or workflow boundary.

An alert becomes an incident (``IncidentWorkflow``), which reads, diagnoses, asks its
entry's governor, waits for people, acts, verifies and tells; each step is an activity
declared in ``activities.py`` (its name, what it takes, what it gives back) and
implemented in ``selfheal.activities``. The messages and results are defined once, here:

- ``incident``  alerts, evidence, diagnosis, the target's state, remediation, verification, notification
- ``agent``     the model diagnosis: conversation, evidence reads, bounds, result
- ``audit``     the incident's record and the approvals people send it
- ``snapshot``  what an incident runs under (whitelist excerpt, settings, evidence catalog)
- ``governor``  the governors' ids, message names and messages
- ``activities`` every activity's declaration
- ``workflows``  the workflows' names and their signals, updates and queries

It imports only the trust boundary (``selfheal.whitelist``) and the SDK; workflows and
activities import it, never each other (``tests/test_layout.py`` checks the arrows).
"""

from selfheal.contract.agent import (
    ToolCall, ChatMessage, ToolSpec, ModelTurnInput, ModelTurn, EvidenceRead, Candidate, SourceInfo,
    EvidenceCatalog, AgentBounds, AgentInput, AgentResult, AwsEvidenceRequest,
)
from selfheal.contract.audit import (
    Approval, Rejection, Viewing, EvidenceView, ApprovalEvent, NotificationRecord, DrillRecord, AuditRecord,
)
from selfheal.contract.incident import (
    ActionRequest, Decision, Execution, Param, Alert, AlertBatch, IncidentInput, Evidence, EvidenceItem, Hypothesis,
    DiagnoseInput, Diagnosis, UnitState, WorldState, RemediationInput, RemediationResult, VerifyInput, Check,
    Verification, Notification, PageEvent, EXCERPT,
)
from selfheal.contract.snapshot import (
    IncidentSettings, LoadPolicy, PolicySnapshot,
)
