"""How the dashboard holds up under a fleet's events: ``python -m benchmarks.dashboard``.

    python -m benchmarks.dashboard [--workers 50] [--rate 1000] [--seconds 30]

Two measures, nothing asserted (docs/monitoring.md quotes them):

1. **Ingest**: how many events a second the dashboard's state takes in, on this machine,
   from the events of ``--workers`` workers (received, started, succeeded per task and a
   heartbeat every 2 s per worker).
2. **Live**: a private Redis, a real ``taskq dashboard`` process, and this process sending
   the events of ``--workers`` workers at ``--rate`` tasks a second, batched as workers
   send them. Meanwhile the JSON a page reads is fetched five times a second. Reported:
   the events sent and received, the JSON's latency (p50/p99), the dashboard's CPU and
   memory, and the tasks it kept (bounded by --max-tasks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from taskq import Taskq
from taskq.dashboard.state import FleetState
from taskq.events import EventDispatcher
from tests.integration.helpers import DashboardProcess, wait_for  # plain Python, no pytest
from tests.servers import RedisServer

APP = "tests.integration.dashboard_tasks"
ROOT = Path(__file__).resolve().parents[1]


def synthetic(workers: int, tasks: int) -> list[dict[str, Any]]:
    now = time.time()
    events: list[dict[str, Any]] = []
    for i in range(tasks):
        host, task_id = f"w{i % workers}@bench", str(uuid.uuid4())
        base = {"uuid": task_id, "hostname": host, "timestamp": now + i / 1000}
        events += [
            {
                **base,
                "type": "task-received",
                "name": "bench.add",
                "args": "(1, 2)",
                "kwargs": "{}",
                "retries": 0,
            },
            {**base, "type": "task-started"},
            {**base, "type": "task-succeeded", "result": "3", "runtime": 0.001},
        ]
        if i % 1000 < workers:  # a heartbeat from each worker per 1,000 tasks
            events.append({"type": "worker-heartbeat", "hostname": host, "freq": 2.0,
                           "active": 1, "processed": i, "timestamp": now})  # fmt: skip
    return events


def ingest(workers: int) -> float:
    events = synthetic(workers, 100_000)
    state = FleetState()
    started = time.perf_counter()
    for event in events:
        state.apply(event)
    return len(events) / (time.perf_counter() - started)


def send_events(app: Taskq, workers: int, rate: int, seconds: float) -> int:
    """The events of ``workers`` workers running ``rate`` tasks a second; how many sent."""
    conn = app.connection()
    dispatchers = [EventDispatcher(app, f"w{i}@bench", buffered=True) for i in range(workers)]
    for d in dispatchers:
        d.connect(conn)
    sent, tick, per_tick = 0, 0.1, max(1, rate // 10)
    start = next_tick = time.monotonic()
    last_beat = 0.0
    while time.monotonic() - start < seconds:
        for n in range(per_tick):
            d = dispatchers[(sent + n) % workers]
            task_id = str(uuid.uuid4())
            d.task("task-received", task_id, ',"name":"bench.add","args":"(1, 2)","kwargs":"{}"')
            d.task("task-started", task_id)
            d.task("task-succeeded", task_id, ',"result":"3","runtime":0.001')
        sent += per_tick * 3
        if time.monotonic() - last_beat >= 2.0:
            for d in dispatchers:
                d.send("worker-heartbeat", freq=2.0, active=1, processed=sent)
            sent += workers
            last_beat = time.monotonic()
        for d in dispatchers:
            d.flush(force=True)
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    conn.release()
    return sent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def live(workers: int, rate: int, seconds: float) -> dict[str, Any]:
    with RedisServer() as redis:
        env = {"DASH_BROKER": redis.url, "PYTHONPATH": str(ROOT)}
        app = Taskq("bench", broker=redis.url)
        with DashboardProcess(APP, env=env) as board:
            url = board.url
            wait_for(lambda: get(url + "api/overview")["events"]["connected"], 60, "events")
            latencies: list[float] = []
            done = threading.Event()

            def read_pages() -> None:
                while not done.is_set():
                    began = time.perf_counter()
                    get(url + "api/tasks?limit=100")
                    get(url + "api/overview")
                    latencies.append(time.perf_counter() - began)
                    done.wait(0.2)

            reader = threading.Thread(target=read_pages)
            cpu_before, began = cpu_seconds(board.pid), time.monotonic()
            reader.start()
            sent = send_events(app, workers, rate, seconds)
            done.set()
            reader.join()
            wait_for(lambda: get(url + "api/overview")["events"]["received"] >= sent, 120,
                     "the dashboard to read every event")  # fmt: skip
            elapsed = time.monotonic() - began
            overview = get(url + "api/overview")
            cpu = (cpu_seconds(board.pid) - cpu_before) / elapsed
            memory = rss_mib(board.pid)
        app.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "events sent": sent,
        "events received": overview["events"]["received"],
        "seconds (until all read)": round(elapsed, 1),
        "JSON p50 ms (tasks + overview)": round(statistics.median(latencies) * 1000, 1),
        "JSON p99 ms": round(quantiles[98] * 1000, 1),
        "dashboard CPU (one core = 100 %)": f"{cpu * 100:.0f} %",
        "dashboard RSS MiB": round(memory),
        "tasks kept": overview["tasks"]["kept"],
        "workers online": overview["workers"]["online"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1000, help="tasks per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"ingest: {ingest(args.workers):,.0f} events/s into the state (one thread)")
    found = live(args.workers, args.rate, args.seconds)
    print(f"live: {args.workers} workers, {args.rate} tasks/s for {args.seconds:.0f} s")
    for key, value in found.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
