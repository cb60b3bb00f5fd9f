"""The taskq side of the benchmark: ``taskq -A benchmarks.bench_tasks worker -c 2``.

Broker, backend and whether results are stored come from ``BENCH_*`` environment variables
set by the harness (benchmarks/run.py), so the client and the worker agree.
"""

from __future__ import annotations

import os

from taskq import Taskq

from . import counter

app = Taskq(
    "bench",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/1"),
)
app.conf.update(task_ignore_result=os.environ.get("BENCH_RESULTS", "0") != "1")
if os.environ.get("BENCH_CONFIRM", "1") == "0":
    # RabbitMQ only: publish the way Celery does, without waiting for the broker's confirm.
    app.conf.broker_transport_options = {"confirm_publish": False}

add = app.task(name="bench.add")(counter.add)
tsum = app.task(name="bench.tsum")(counter.tsum)
