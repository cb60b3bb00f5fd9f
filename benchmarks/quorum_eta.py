"""ETA tasks on RabbitMQ: held by the worker (classic queue) or parked in the broker's delay
queues (quorum queue): ``python -m benchmarks.quorum_eta [--tasks 200]``.

A private RabbitMQ, one worker (solo pool, prefetch 1), and ``--tasks`` ETA tasks due 2 to
6 s after they are sent, with as many immediate tasks sent right behind them. Reported
per queue type: how late the ETA tasks ran (run time minus ETA: p50, p99, max; never
negative, as the tests check), and when the immediate tasks were done, measured from the
moment they were sent. Nothing asserted: docs/reliability.md quotes the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from taskq import Taskq
from tests.integration.helpers import WorkerProcess
from tests.servers import RabbitServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.integration.quorum_tasks"


def run(kind: str, rabbit: RabbitServer, redis: RedisServer, count: int) -> dict[str, Any]:
    queue = f"eta-{kind}-{uuid.uuid4().hex[:6]}"
    env = {"QUORUM_BROKER": rabbit.url, "QUORUM_BACKEND": redis.url, "QUORUM_QUEUE": queue,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    from tests.integration import quorum_tasks

    settings = {
        **quorum_tasks.SETTINGS,
        "task_queues": [quorum_tasks.quorum_queue(queue, kind)],
        "task_default_queue": queue,
        "task_dead_letter_queue": f"{queue}.dead",
        "task_default_queue_type": kind,
    }
    app = Taskq("eta-bench", broker=rabbit.url, backend=redis.url, **settings)
    worker_env = {**env, "QUORUM_TYPE": kind}
    with WorkerProcess(APP, "-P", "solo", "-c", "1", env=worker_env):
        now = datetime.now(UTC)
        etas = [now + timedelta(seconds=random.uniform(2, 6)) for _ in range(count)]
        later = [app.send_task("quorum.when", args=("eta",), eta=eta) for eta in etas]
        sent_now = datetime.now(UTC).timestamp()
        immediate = [app.send_task("quorum.when", args=("now",)) for _ in range(count)]
        done_now = max(r.get(timeout=120)[1] for r in immediate) - sent_now
        ran = [r.get(timeout=120)[1] for r in later]
        lateness = [t - eta.timestamp() for t, eta in zip(ran, etas, strict=True)]
    app.close()
    quantiles = statistics.quantiles(lateness, n=100)
    return {
        "queue": kind,
        "ETA late p50 ms": round(statistics.median(lateness) * 1000),
        "p99 ms": round(quantiles[98] * 1000),
        "max ms": round(max(lateness) * 1000),
        "early": sum(1 for x in lateness if x < 0),
        "immediate tasks done after s": round(done_now, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    rows = []
    with RabbitServer() as rabbit, RedisServer() as redis:
        for kind in ("classic", "quorum"):
            rows.append(run(kind, rabbit, redis, args.tasks))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    sys.exit(main())
