"""The generated SSM documents and the IAM statements that let the SSM runner send them.

moto records SendCommand but runs nothing (../shared/MACHINE.md, selfheal/dev/aws_sim.py), so
no test here relies on moto for safety. Safety comes from each document's ``allowedValues``
and its ``case`` statement: checked here as text, by running the script itself with
``sh`` against stand-in ``systemctl``/``journalctl`` that only print their argv, and by
moto's ``create_document`` validation (names, JSON, schema). The IAM statements are checked
with parliament and policy_sentry's action/resource database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from selfheal.activities.systemd import journal_lines, systemctl, unit_state
from selfheal.dev.aws_sim import DEMO_ACCOUNT, DEMO_REGION
from selfheal.activities.ssm_documents import ACTIONS, SHADOW_ACTIONS, allowed_actions, commands
from selfheal.grants.ssm import documents, iam_statements
from selfheal.whitelist import load_whitelist, load_whitelist_bytes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy/demo/whitelist.yaml"
SELFHEAL = Path(sys.executable).parent / "selfheal"

BASE = """\
version: 1
metadata:
  reviewed_by: [alice]
  reviewed_at: 2026-11-25
groups:
  sre: [alice, bob]
entries:
"""


def entry(entry_id: str, unit: str, host: str, scope: str = "system", mode: str = "active") -> str:
    return f"""\
  - id: {entry_id}
    kind: systemd.restart
    mode: {mode}
    target: {{unit: "{unit}", host: "{host}", scope: {scope}}}
    blast_radius: instance
    approvers: {{groups: [sre]}}
    rate_limit: {{max_executions: 2, window: 1h}}
    cooldown: 10m
    match: ['alertname="Down"']
    verify: {{timeout: 1m}}
"""


# Two system units (one limited to a few instances by its host glob) and a user unit.
SYSTEM = BASE + entry("restart-nginx", "nginx.service", "i-*") + entry(
    "restart-worker", "worker@2.service", "i-0a*") + entry("restart-desktop", "desktop.service", "i-*", scope="user")


def system_whitelist():
    return load_whitelist_bytes(SYSTEM.encode(), "system.yaml")


# The same with a shadow system unit (decided, never executed: its document only reads)
# listed first, and a shadow user unit (no document, as for an active one).
SHADOWED = BASE + entry("a-watch-db", "db.service", "i-*", mode="shadow") + SYSTEM.removeprefix(BASE) + entry(
    "watch-desktop", "desktop2.service", "i-*", scope="user", mode="shadow")
SHADOW_DOC = "selfheal-restart-a-watch-db"


def shadowed_whitelist():
    return load_whitelist_bytes(SHADOWED.encode(), "shadowed.yaml")


def script(doc: dict) -> str:
    return "\n".join(doc["mainSteps"][0]["inputs"]["runCommand"]) + "\n"


def test_the_demo_whitelists_user_unit_gets_no_document():
    loaded = load_whitelist(DEMO)
    assert [e.target.scope for e in loaded.whitelist.entries if e.kind == "systemd.restart"] == ["user"]
    assert documents(loaded) == {}
    assert iam_statements(loaded, DEMO_REGION, DEMO_ACCOUNT) == []


def test_one_document_per_system_unit_with_one_constrained_parameter():
    loaded = system_whitelist()
    docs = documents(loaded)
    assert sorted(docs) == ["selfheal-restart-restart-nginx", "selfheal-restart-restart-worker"]
    for name, doc in docs.items():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]{3,128}", name)
        assert json.loads(json.dumps(doc)) == doc
        assert doc["schemaVersion"] == "2.2"
        assert doc["parameters"] == {"action": {"type": "String", "description": doc["parameters"]["action"]["description"],
                                                "allowedValues": ["show", "restart", "journal"]}}
        assert name.removeprefix("selfheal-restart-") in doc["description"] and loaded.sha256 in doc["description"]
        [step] = doc["mainSteps"]
        assert step["action"] == "aws:runShellScript"
        text = script(doc)
        # The parameter is the case word and nothing else; the unit is baked in, quoted.
        assert re.findall(r"\{\{.*?\}\}", text) == ["{{ action }}"]
        assert text.startswith('case "{{ action }}" in\n') and text.endswith("esac\n")
        assert re.search(r"^  \*\) .*exit 2 ;;$", text, re.M)
        assert [line.split(")")[0].strip() for line in text.splitlines()[1:-1]] == [*ACTIONS, "*"]
    assert "'nginx.service'" in script(docs["selfheal-restart-restart-nginx"])
    assert "desktop.service" not in json.dumps(docs)


class Recorder:
    """A runner that records the argv ``systemd.py`` sends and answers like systemd would."""

    def __init__(self):
        self.sent: list[tuple[tuple[str, ...], bool]] = []

    async def run(self, host, argv, timeout=60.0, privileged=False):
        from selfheal.activities.runner import CommandResult

        self.sent.append((tuple(argv), privileged))
        return CommandResult(tuple(argv), 0, "LoadState=loaded\n", "")


def run_script(doc: dict, action: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the document's script as SSM would after substituting ``action``, with stand-in
    binaries that print their argv (one per line) instead of touching systemd."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("systemctl", "journalctl"):
        (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" {tool} "$@"\n')
        (bin_dir / tool).chmod(0o755)
    text = script(doc).replace("{{ action }}", action)
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=10,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


async def test_each_action_runs_exactly_what_systemd_py_sends(tmp_path):
    docs = documents(system_whitelist())
    doc, unit = docs["selfheal-restart-restart-worker"], "worker@2.service"
    recorder = Recorder()
    await unit_state(recorder, "i-0a12345678", "system", unit)
    await journal_lines(recorder, "i-0a12345678", "system", unit, datetime(2026, 1, 1, tzinfo=timezone.utc), 2000)
    (show, _), (journal, _) = recorder.sent
    restart = systemctl("system", "restart", unit)  # what SystemdRemediator.restart_unit sends
    for action, expected in (("show", show), ("restart", tuple(restart)), ("journal", tuple(commands(unit)["journal"]))):
        done = run_script(doc, action, tmp_path)
        assert done.returncode == 0, done.stderr
        assert tuple(done.stdout.splitlines()) == expected
    # The journal differs from what journal_lines sends only in its fixed bounds.
    assert [i for i, (a, b) in enumerate(zip(journal, commands(unit)["journal"])) if a != b] == [9, 11]
    assert commands(unit)["journal"][8:] == ["--since", "-15min", "--lines", "50", "--reverse"]


@pytest.mark.parametrize("word", ["stop", "start", "SHOW", "show ", " restart", "restart2", "", "daemon-reload", "*"])
def test_any_other_plain_word_runs_nothing(word, tmp_path):
    done = run_script(documents(system_whitelist())["selfheal-restart-restart-nginx"], word, tmp_path)
    assert (done.returncode, done.stdout) == (2, "")


def test_a_shadow_entrys_document_only_reads(tmp_path):
    loaded = shadowed_whitelist()
    docs = documents(loaded)
    # Active entries first, then shadow ones: a restart both could match goes to the active one's.
    assert list(docs) == ["selfheal-restart-restart-nginx", "selfheal-restart-restart-worker", SHADOW_DOC]
    for name, plain in documents(system_whitelist()).items():  # the active entries' documents are unchanged
        assert docs[name] == {**plain, "description": plain["description"].replace(system_whitelist().sha256, loaded.sha256)}
    doc = docs[SHADOW_DOC]
    assert doc["parameters"]["action"]["allowedValues"] == ["show", "journal"] == list(SHADOW_ACTIONS)
    assert "restart" not in doc["parameters"]["action"]["description"]
    assert "shadow mode" in doc["description"] and "never restart" in doc["description"]
    text = script(doc)
    assert [line.split(")")[0].strip() for line in text.splitlines()[1:-1]] == ["show", "journal", "*"]
    assert " restart " not in text and "desktop2" not in json.dumps(docs)
    # Even were SSM to let "restart" through, the script has no branch for it: nothing runs.
    done = run_script(doc, "restart", tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    for action in ("show", "journal"):
        done = run_script(doc, action, tmp_path)
        assert done.returncode == 0 and tuple(done.stdout.splitlines()) == tuple(commands("db.service")[action])
    assert "restart" not in allowed_actions(loaded.whitelist.entry("a-watch-db"))
    assert allowed_actions(loaded.whitelist.entry("restart-nginx")) == ACTIONS


@pytest.mark.parametrize("which", ["system", "shadowed"])
def test_documents_are_accepted_by_create_document(aws_world, which):
    ssm = aws_world.client("ssm")
    docs = documents(system_whitelist() if which == "system" else shadowed_whitelist())
    for name, doc in docs.items():
        ssm.create_document(Content=json.dumps(doc), Name=name, DocumentType="Command", DocumentFormat="JSON")
    for name, doc in docs.items():
        assert json.loads(ssm.get_document(Name=name)["Content"]) == doc
        described = ssm.describe_document(Name=name)["Document"]
        assert described["DocumentType"] == "Command" and described["SchemaVersion"] == "2.2"
        assert [p["Name"] for p in described["Parameters"]] == ["action"]
    if which == "shadowed":  # the read-only document, as SSM stored it: restart is not an allowed value
        stored = json.loads(ssm.get_document(Name=SHADOW_DOC)["Content"])
        assert stored["parameters"]["action"]["allowedValues"] == ["show", "journal"]


async def test_the_ssm_runner_reads_a_shadow_unit_through_its_document(aws_world):
    """The diagnosis of a shadow entry reads its unit's state and journal over SSM: through
    the shadow entry's own document, with a read action."""
    from selfheal.activities.ssm_runner import SsmRunner, SsmTarget

    runner = SsmRunner(SsmTarget(region=DEMO_REGION, account=DEMO_ACCOUNT, poll_every=0.02), shadowed_whitelist(),
                       aws_world.clients())
    host = aws_world.seeded["batch_instances"][0]
    state = await unit_state(runner, host, "system", "db.service")
    assert state.active_state == ""  # moto runs nothing: an empty state
    [command] = aws_world.client("ssm").list_commands()["Commands"]
    assert command["DocumentName"] == SHADOW_DOC and command["Parameters"] == {"action": ["show"]}


def test_iam_statements_name_only_the_generated_documents_and_tagged_instances():
    loaded = system_whitelist()
    statements = iam_statements(loaded, DEMO_REGION, DEMO_ACCOUNT, instance_tags={"Role": "batch", "Env": "demo"})
    assert "AWS-RunShellScript" not in json.dumps(statements)
    sids = [s["Sid"] for s in statements]
    assert len(set(sids)) == len(sids) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    documents_ = [s for s in statements if ":document/" in s["Resource"]]
    assert sorted(s["Resource"] for s in documents_) == sorted(
        f"arn:aws:ssm:{DEMO_REGION}:{DEMO_ACCOUNT}:document/{name}" for name in documents(loaded))
    assert {s["Sid"] for s in documents_} == {"SsmSendDocumentRestartNginx", "SsmSendDocumentRestartWorker"}
    assert all(s["Action"] == "ssm:SendCommand" and "Condition" not in s for s in documents_)
    [instances] = [s for s in statements if s["Sid"] == "SsmSendToInstances"]
    assert instances["Resource"] == f"arn:aws:ec2:{DEMO_REGION}:{DEMO_ACCOUNT}:instance/*"
    assert instances["Condition"] == {"StringEquals": {"ssm:resourceTag/Env": "demo", "ssm:resourceTag/Role": "batch"}}
    [read] = [s for s in statements if s["Action"] == "ssm:GetCommandInvocation"]
    assert read["Resource"] == "*" and read["Condition"] == {"StringEquals": {"aws:RequestedRegion": DEMO_REGION}}
    assert len(statements) == 4
    untagged = iam_statements(loaded, DEMO_REGION, DEMO_ACCOUNT)
    assert all("Condition" not in s for s in untagged if s["Action"] == "ssm:SendCommand")


def test_iam_statements_let_a_shadow_entrys_document_be_sent():
    loaded = shadowed_whitelist()
    statements = iam_statements(loaded, DEMO_REGION, DEMO_ACCOUNT)
    documents_ = {s["Sid"]: s["Resource"] for s in statements if ":document/" in s["Resource"]}
    assert documents_ == {
        "SsmSendDocumentRestartNginx": f"arn:aws:ssm:{DEMO_REGION}:{DEMO_ACCOUNT}:document/selfheal-restart-restart-nginx",
        "SsmSendDocumentRestartWorker": f"arn:aws:ssm:{DEMO_REGION}:{DEMO_ACCOUNT}:document/selfheal-restart-restart-worker",
        "SsmSendShadowDocumentAWatchDb": f"arn:aws:ssm:{DEMO_REGION}:{DEMO_ACCOUNT}:document/{SHADOW_DOC}",
    }
    assert len(statements) == 5 and "AWS-RunShellScript" not in json.dumps(statements)


@pytest.mark.parametrize("which", ["system", "shadowed"])
def test_iam_statements_against_policy_sentry_and_parliament(which):
    import parliament
    from policy_sentry.querying.actions import get_action_data

    loaded = system_whitelist() if which == "system" else shadowed_whitelist()
    statements = iam_statements(loaded, DEMO_REGION, DEMO_ACCOUNT, instance_tags={"Role": "batch"})
    rows = get_action_data("ssm", "SendCommand")["ssm"]
    instance_row = next(r for r in rows if r["resource_arn_format"].endswith(":instance/${InstanceId}"))
    assert "ssm:resourceTag/${TagKey}" in instance_row["condition_keys"]
    assert get_action_data("ssm", "GetCommandInvocation")["ssm"][0]["resource_arn_format"] == "*"

    def findings(stmts):
        policy = parliament.analyze_policy_string(json.dumps({"Version": "2012-10-17", "Statement": stmts}))
        return [(f.issue, f.detail) for f in policy.findings]

    others = [s for s in statements if s["Sid"] != "SsmSendToInstances"]
    assert findings(others) == []
    # parliament wants every SendCommand statement to name a document (its required
    # resource type). The instances have a statement of their own because the tag
    # condition, on the documents' statement, would deny every call; that is its only finding.
    [instances] = [s for s in statements if s["Sid"] == "SsmSendToInstances"]
    assert [issue for issue, _ in findings([instances])] == ["RESOURCE_MISMATCH"]


def test_sids_stay_unique_when_entry_ids_differ_only_in_punctuation():
    loaded = load_whitelist_bytes((BASE + entry("web-a", "a.service", "i-*") + entry("web.a", "b.service", "i-*")).encode(), "x")
    sids = [s["Sid"] for s in iam_statements(loaded, "eu-west-1", "123456789012")]
    assert sids[:2] == ["SsmSendDocumentWebA", "SsmSendDocumentWebA2"]
    with pytest.raises(ValueError):
        iam_statements(loaded, "eu-west-1", "12345")


def test_cli_writes_one_file_per_system_unit(tmp_path):
    wl = tmp_path / "whitelist.yaml"
    wl.write_text(SYSTEM)
    out = tmp_path / "docs"
    done = subprocess.run([str(SELFHEAL), "whitelist", "ssm-documents", str(wl), "--out", str(out)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["selfheal-restart-restart-nginx.json", "selfheal-restart-restart-worker.json"]
    loaded = load_whitelist(wl)
    for name, doc in documents(loaded).items():
        assert json.loads((out / f"{name}.json").read_text()) == doc


def test_iam_policy_with_a_runners_file_grants_the_ssm_rules_documents(tmp_path):
    wl, runners = tmp_path / "wl.yaml", tmp_path / "runners.yaml"
    wl.write_text(SYSTEM)
    runners.write_text(f'runners:\n  - hosts: "i-*"\n    ssm: {{region: {DEMO_REGION}, account: "{DEMO_ACCOUNT}"}}\n')
    cli = Path(sys.executable).parent / "selfheal"
    done = subprocess.run([str(cli), "whitelist", "iam-policy", str(wl), "--runners", str(runners)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    policy = json.loads(done.stdout)
    assert policy["Statement"] == iam_statements(system_whitelist(), DEMO_REGION, DEMO_ACCOUNT)
    sent = {r for s in policy["Statement"] if s["Action"] in ("ssm:SendCommand", ["ssm:SendCommand"])
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
    assert f"arn:aws:ssm:{DEMO_REGION}:{DEMO_ACCOUNT}:document/selfheal-restart-restart-nginx" in sent
    assert not any("AWS-RunShellScript" in r for r in sent)
    runners.write_text("runners:\n  - hosts: 'i-*'\n    ssm: {region: nowhere}\n")
    bad = subprocess.run([str(cli), "whitelist", "iam-policy", str(wl), "--runners", str(runners)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and str(runners) in bad.stderr
