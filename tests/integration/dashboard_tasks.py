"""The app the dashboard's integration tests run: a worker and a dashboard load it.

Its broker and backend come from DASH_BROKER and DASH_BACKEND; ``parked`` is a queue no
worker consumes, so its depth only grows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kombu import Queue

from taskq import Taskq

app = Taskq(
    "dashtest",
    broker=os.environ.get("DASH_BROKER") or None,
    backend=os.environ.get("DASH_BACKEND") or None,
    task_queues=[Queue("dashq"), Queue("parked")],
    task_default_queue="dashq",
    task_dead_letter_queue="dashq.dead",
    task_routes={"dash.parked": {"queue": "parked"}},
)


@app.task(name="dash.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="dash.fail")
def fail(why: str) -> None:
    raise ValueError(f"failed on purpose: {why}")


@app.task(name="dash.parked")
def parked() -> None:
    """Never runs: its queue has no consumer."""


@app.task(name="dash.gate")
def gate(path: str) -> str:
    """Runs until the test creates ``path`` (at most two minutes)."""
    deadline = time.monotonic() + 120
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "opened"
