"""The Celery side of the benchmark, run from benchmarks/.venv-celery (never from .venv).

The same task bodies (``counter.add``, ``counter.tsum``) under the same names, with the same
``BENCH_*`` environment as benchmarks/bench_tasks.py. Everything else is Celery's default,
except the start-up retry flag that only silences a deprecation warning.
"""

from __future__ import annotations

import os

from celery import Celery

from . import counter

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/1"),
)
app.conf.update(
    task_ignore_result=os.environ.get("BENCH_RESULTS", "0") != "1",
    broker_connection_retry_on_startup=True,
)

add = app.task(name="bench.add")(counter.add)
tsum = app.task(name="bench.tsum")(counter.tsum)
