"""Episode storm: N alert posts over K keys through the ingress, with a worker running.

Run by hand:  .venv/bin/python bench/episode_storm.py [--posts 10000] [--keys 100] [--concurrency 100] [--no-distinct]
Needs wrk (Debian package ``wrk``); bench/episode_storm.lua makes it send exactly N posts.

Every post is one alert re-delivering its key's episode (fixed fingerprint and starts_at).
Even keys are ``IngressTest`` (the incident waits for approval, so re-posts are signals or
``already delivered``), odd keys ``Storm`` (the incident ends as no_remedy mid-storm, so
re-posts are ``duplicate``). With --distinct (the default, the worst case) every post is a
new alert the incident must get; with --no-distinct they are pure re-sends.

Proves, after visibility has settled: exactly K incidents (one per key), the largest
incident history (events; must be <= 1,000). Measures posts/s, median latency, non-202
answers (must be 0), the ingress's Temporal calls and the answer states. Baseline, same
run and server: the same N alerts as raw signal-with-start (one call per alert, no episode
id, default id reuse) from a Python process, as an ingress without episodes would; prints
the throughput ratio and how many workflow runs that made. Exits 1 if a proof fails.

The worker runs in its own process, as deployed: in the ingress's event loop it would
make the figure measure the worker too. Run on an otherwise idle machine: a starved dev
server takes over 5 s on some calls, and the ingress then answers 503 (its deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfheal import search  # noqa: E402
from selfheal.ingress.app import create_app  # noqa: E402
from selfheal.ingress.auth import SourceAuth  # noqa: E402
from selfheal.ingress.delivery import Delivery  # noqa: E402
from selfheal.ingress.settings import IngressSettings  # noqa: E402
from selfheal.contract import Alert, AlertBatch, IncidentInput  # noqa: E402
from selfheal.settings import WorkerSettings  # noqa: E402
from tests.ingress.conftest import RULES, WHITELIST  # noqa: E402
from tests.ingress.served import serving  # noqa: E402
from tests.workflows.helpers import FAST, running_worker  # noqa: E402

TOKEN = "bench"
MAX_EVENTS = 1000


def connect(target: str):
    return Client.connect(target, data_converter=pydantic_data_converter)


def post(i: int, keys: int, run: str, starts: datetime, distinct: bool) -> tuple[int, Alert]:
    """Post i, exactly as episode_storm.lua builds it: (key number, alert)."""
    k = i % keys
    labels = {"alertname": "IngressTest" if k % 2 == 0 else "Storm", "service": f"svc-{k}"}
    return k, Alert(source="generic", labels=labels, annotations={"n": str(i if distinct else 0)},
                    starts_at=starts, fingerprint=f"{run}-{k}")


async def baseline_sender(target, posts, keys, concurrency, run, starts, distinct, queue) -> None:
    """Child process: one signal-with-start per alert; prints elapsed and latencies as JSON."""
    client = await connect(target)
    sem, latencies = asyncio.Semaphore(int(concurrency)), []

    async def one(i: int) -> None:
        k, alert = post(i, int(keys), run, datetime.fromisoformat(starts), distinct == "1")
        async with sem:
            t = time.perf_counter()
            await client.start_workflow(
                "IncidentWorkflow", IncidentInput(alerts=[alert]), id=f"raw-{run}-{k}", task_queue=queue,
                start_signal="alerts", start_signal_args=[AlertBatch(alerts=[alert])],
            )
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(int(posts))))
    print(json.dumps({"elapsed": time.perf_counter() - start, "latencies": latencies}))


async def worker_process(target: str, *queues: str) -> None:
    """Child process: a real worker on each queue, until stdin closes."""
    client = await connect(target)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "wl.yaml").write_text(WHITELIST)
        (Path(tmp) / "rules.yaml").write_text(RULES)
        async with AsyncExitStack() as stack:
            for q in queues:
                s = WorkerSettings(task_queue=q, whitelist=f"{tmp}/wl.yaml", diagnosis=f"{tmp}/rules.yaml", incident=FAST)
                await stack.enter_async_context(running_worker(client, s))
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def child(*args: str, **kw) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE, **kw)


async def storm(url: str, args, run: str, starts: datetime) -> dict:
    """wrk sends exactly args.posts posts; returns its EPISODE figures and the wall time."""
    threads = 2 if args.concurrency % 2 == 0 else 1  # wrk gives each thread -c / -t connections
    with tempfile.TemporaryDirectory() as done:
        env = {**os.environ, "POSTS": str(args.posts), "KEYS": str(args.keys), "THREADS": str(threads), "RUN": run,
               "TOKEN": TOKEN, "STARTS": starts.isoformat(), "DISTINCT": "1" if args.distinct else "0", "DONE_DIR": done}
        start = time.perf_counter()
        # -d is only a cap: the script stops each thread after its share and we interrupt wrk.
        # --timeout: wrk leaves slower answers out of its latencies; the ingress answers within 5 s.
        proc = await asyncio.create_subprocess_exec(
            "wrk", f"-t{threads}", f"-c{args.concurrency}", "-d600s", "--timeout", "60s",
            "-s", str(Path(__file__).with_suffix(".lua")), url, stdout=asyncio.subprocess.PIPE, env=env)
        while len(os.listdir(done)) < threads and proc.returncode is None:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out = (await proc.communicate())[0].decode()
    line = next((x for x in out.splitlines() if x.startswith("EPISODE ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    return {**json.loads(line[len("EPISODE "):]), "elapsed": elapsed}


async def settle(client: Client, queue: str, running: int, timeout: float = 120.0) -> list:
    """The queue's executions once visibility is steady: `running` still open, two equal reads a second apart."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        now = [e async for e in client.list_workflows(f'TaskQueue = "{queue}"')]
        view = sorted((e.id, e.run_id, e.status) for e in now)
        open_ = sum(e.status.name == "RUNNING" for e in now)
        if (view == last and open_ == running) or time.monotonic() > deadline:
            return now
        last = view
        await asyncio.sleep(1.0)


async def main() -> int:
    if sys.argv[1:2] == ["--send"]:
        await baseline_sender(*sys.argv[2:])
        return 0
    if sys.argv[1:2] == ["--worker"]:
        await worker_process(*sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=True,
                        help="every post a new alert (default); --no-distinct: pure re-sends")
    args = parser.parse_args()
    if args.posts < 2:
        parser.error("--posts must be at least 2 (each wrk thread sends its share)")
    run = uuid.uuid4().hex[:6]
    starts = datetime.now(timezone.utc).replace(microsecond=0)
    waiting = (args.keys + 1) // 2  # IngressTest keys: their incidents stay open
    raw_q, ingress_q = f"raw-{run}", f"episode-{run}"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal"), data_converter=pydantic_data_converter,
        ip="127.0.0.1", dev_server_log_level="error", search_attributes=search.ALL)
    worker = None
    try:
        client, target = env.client, env.client.service_client.config.target_host
        worker = await child("--worker", target, raw_q, ingress_q, stdin=asyncio.subprocess.PIPE)
        if (await worker.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the worker process did not start")
        print(f"{args.posts} posts over {args.keys} keys ({waiting} IngressTest, {args.keys - waiting} Storm), "
              f"{args.concurrency} concurrent, {'distinct alerts' if args.distinct else 'pure re-sends'}, worker running")

        # Baseline first; let its incidents settle so their work does not load the storm.
        sender = await child("--send", target, str(args.posts), str(args.keys), str(args.concurrency), run,
                             starts.isoformat(), "1" if args.distinct else "0", raw_q)
        out, _ = await sender.communicate()
        if sender.returncode:
            raise RuntimeError(f"baseline sender failed with {sender.returncode}")
        base = json.loads(out)
        base_rate = args.posts / base["elapsed"]
        raw_runs = await settle(client, raw_q, waiting)
        print(f"baseline signal-with-start {base_rate:7.0f} posts/s  median {statistics.median(base['latencies']) * 1000:7.1f} ms"
              f"  max {max(base['latencies']):5.1f} s  Temporal calls {args.posts:6d}  "
              f"workflow runs made {len(raw_runs)} for {args.keys} keys")

        delivery = Delivery(client, ingress_q, search_attributes=True)
        app = create_app(IngressSettings(sources={"generic": SourceAuth(token=TOKEN)}), delivery)
        async with serving(app) as (url, answered):
            load = await storm(url, args, run, starts)
        served = sum(path == "/v1/alerts/generic" for path, _ in answered)  # the server's own count of posts
        rate = load["answered"] / load["elapsed"]
        print(f"ingress (wrk)              {rate:7.0f} posts/s  median {load['median_us'] / 1000:7.1f} ms"
              f"  max {load['max_us'] / 1e6:5.1f} s  "
              f"Temporal calls {delivery.calls:6d} ({load['answered'] / max(delivery.calls, 1):.1f} alerts per call)  "
              f"posts answered {load['answered']} (server: {served})  non-202 {load['non202']}")
        print("answer states: " + ", ".join(f"{s} {n}" for s, n in sorted(load["states"].items())))
        for what, n in load["refused"].items():
            print(f"non-202: {n} x {what}")

        # Count only once visibility is steady: every Storm incident closed, nothing new appearing.
        runs = await settle(client, ingress_q, waiting)
        per_key = Counter(e.id.split("~")[0] for e in runs)
        expected = {f"generic-{run}-{k}" for k in range(args.keys)}
        outcomes = Counter(e.typed_search_attributes.get(search.OUTCOME)
                           or f"running ({e.typed_search_attributes.get(search.STATUS)})" for e in runs)
        print(f"incidents: {len(runs)} for {args.keys} keys (most for one key {max(per_key.values(), default=0)}, "
              f"keys without one {len(expected - set(per_key))}); "
              + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())))

        sem = asyncio.Semaphore(20)

        async def events(e) -> int:
            async with sem:
                return len((await client.get_workflow_handle(e.id, run_id=e.run_id).fetch_history()).events)

        sizes = await asyncio.gather(*(events(e) for e in runs))
        biggest = max(sizes, default=0)
        print(f"history events per incident: max {biggest}, median {statistics.median(sizes or [0]):.0f} (limit {MAX_EVENTS})")
        print(f"throughput ratio ingress/baseline: {rate / base_rate:.2f}x")

        failures = []
        if len(runs) != args.keys or set(per_key) != expected:
            failures.append(f"{len(runs)} incidents, not one for each of {args.keys} keys")
        if biggest > MAX_EVENTS:
            failures.append(f"an incident history of {biggest} events exceeds {MAX_EVENTS}")
        if load["non202"] or load["answered"] != args.posts or served != args.posts:
            failures.append(f"{load['non202']} non-202 answers, {load['answered']} answers to {served} of {args.posts} posts")
        print("FAILED: " + "; ".join(failures) if failures else
              f"OK: {args.posts} posts over {args.keys} keys gave exactly {args.keys} incidents, at most {biggest} events each")
        return 1 if failures else 0
    finally:
        if worker is not None:
            worker.stdin.close()  # the worker shuts down at end of input
            try:
                await asyncio.wait_for(worker.wait(), 30)
            except TimeoutError:
                worker.kill()
        await env.shutdown()


if __name__ == "__main__":
    code = asyncio.run(main())
    # Skip interpreter teardown: the Temporal client's Rust threads can abort it ("PyGILState_Release:
    # thread state must be current", temporalio/sdk-python#300) and turn a finished run's exit code into 134.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
