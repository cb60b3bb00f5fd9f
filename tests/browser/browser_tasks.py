"""Tasks for the dashboard's browser tests. The worker, the dashboard and the test's own
client build the same app from BTEST_* variables (``browser_env`` / ``make_app``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from taskq import Taskq


def browser_env(broker: str, backend: str, queue: str) -> dict[str, str]:
    """The BTEST_* variables that make a subprocess build the same app as ``make_app``."""
    return {"BTEST_BROKER": broker, "BTEST_BACKEND": backend, "BTEST_QUEUE": queue}


def make_app(broker: str | None, backend: str | None, queue: str) -> Taskq:
    app = Taskq(
        "btest",
        broker=broker or None,
        backend=backend or None,
        task_default_queue=queue,
        task_dead_letter_queue=f"{queue}.dead",
    )
    register(app)
    return app


def register(app: Taskq) -> None:
    @app.task(name="btest.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="btest.wait_for")
    def wait_for(path: str, timeout: float = 120.0) -> str:
        """Run until the test creates ``path`` (so the page can show it STARTED first)."""
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            if time.monotonic() > deadline:
                return "gave up"
            time.sleep(0.05)
        return "released"

    @app.task(name="btest.fail")
    def fail(message: str) -> None:
        raise ValueError(message)


app = make_app(
    os.environ.get("BTEST_BROKER"),
    os.environ.get("BTEST_BACKEND"),
    os.environ.get("BTEST_QUEUE", "btest"),
)
