from datetime import datetime, timedelta, timezone

from temporalio.testing import ActivityEnvironment

from selfheal.activities.diagnose import DiagnosisRules, RuleDiagnoser
from selfheal.activities.runner import LocalRunner
from selfheal.contract import Alert, DiagnoseInput


def alert(**labels) -> Alert:
    return Alert(labels=labels, starts_at=datetime.now(timezone.utc) - timedelta(seconds=1), fingerprint="f1")


def rules(log, **extra) -> DiagnosisRules:
    return DiagnosisRules.model_validate(
        {
            "signatures": [
                {"id": "oom", "summary": "out of memory", "match": ['alertname="ApiDown"'], "file": str(log),
                 "pattern": "OutOfMemoryError", "propose": "restart-api", "confidence": 0.7, **extra},
                {"id": "label-only", "summary": "the alert alone", "match": ['alertname="ApiDown"'], "confidence": 0.1},
            ]
        }
    )


async def test_log_lines_matching_a_signature_become_the_evidence(tmp_path):
    log = tmp_path / "api.log"
    log.write_text("ok\njava.lang.OutOfMemoryError: heap\nok\n")
    diagnosis = await ActivityEnvironment().run(
        RuleDiagnoser(rules(log), LocalRunner()).diagnose, DiagnoseInput(incident_id="i", alerts=[alert(alertname="ApiDown")], candidates=[])
    )
    assert diagnosis.proposal == "restart-api" and diagnosis.confidence == 0.7
    oom = diagnosis.hypotheses[0]
    assert oom.id == "oom"
    assert [e.source for e in oom.evidence] == ["labels", f"file:{log}"]
    assert oom.evidence[1].lines == ["java.lang.OutOfMemoryError: heap"]
    assert "oom" in diagnosis.rationale


async def test_no_matching_line_means_no_proposal(tmp_path):
    log = tmp_path / "api.log"
    log.write_text("all good\n")
    diagnosis = await ActivityEnvironment().run(
        RuleDiagnoser(rules(log), LocalRunner()).diagnose, DiagnoseInput(incident_id="i", alerts=[alert(alertname="ApiDown")], candidates=[])
    )
    assert diagnosis.proposal is None
    assert [h.id for h in diagnosis.hypotheses] == ["label-only"]


async def test_signatures_for_other_alerts_stay_silent(tmp_path):
    diagnosis = await ActivityEnvironment().run(
        RuleDiagnoser(rules(tmp_path / "none.log"), LocalRunner()).diagnose,
        DiagnoseInput(incident_id="i", alerts=[alert(alertname="DiskFull")], candidates=[]),
    )
    assert diagnosis.hypotheses == [] and diagnosis.proposal is None


async def test_journal_lines_keeps_the_newest_lines_of_a_busy_unit(systemd_user, runner):
    """With --since, journalctl starts at the window's beginning: without --reverse, --lines
    would keep the oldest entries, and a diagnosis would miss what happened last."""
    import uuid

    from selfheal.activities.systemd import journal_lines

    sd, unit = systemd_user, f"busy-{uuid.uuid4().hex[:8]}.service"
    sd.install_unit(unit, sd.simple_service("i=0; while [ $i -lt 60 ]; do echo line $i; i=$((i+1)); done; sleep 300"))
    try:
        sd.wait_until(lambda: sd.journal_entries(unit, grep="line 59"), timeout=30)
        lines = await journal_lines(runner, "localhost", "user", unit, datetime.now(timezone.utc) - timedelta(minutes=5), 5)
    finally:
        sd.systemctl("stop", unit, check=False)
        (sd.unit_dir / unit).unlink(missing_ok=True)
    # The newest entries, in order. systemd's own "Started ..." message about the unit may
    # land among them (journald does not order it against the unit's output), so the
    # unit's lines are the newest ones and at most one of the five is the manager's.
    own = [line for line in lines if line.startswith("line ")]
    assert len(lines) == 5 and len(own) >= 4, lines
    assert own == [f"line {i}" for i in range(60 - len(own), 60)], lines
