"""The quickstart app: no broker to install, it runs on taskq's embedded default.

Start a worker:  taskq -A examples.quickstart.tasks worker -l info
Send tasks:  python -c "from examples.quickstart.tasks import add; print(add.delay(2, 2).get())"
"""

from __future__ import annotations

import os
import random

from taskq import Taskq

# No URLs: broker and results live in SQLite files that every process on this machine
# shares (TASKQ_DEMO_DIR lets `make demo` keep them in a temporary folder).
app = Taskq("quickstart", embedded_data_dir=os.environ.get("TASKQ_DEMO_DIR"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task(bind=True, max_retries=5, default_retry_delay=0.2)
def flaky_fetch(self, url: str) -> str:  # type: ignore[no-untyped-def]
    """Fails at random, like a network call, and retries until it gets through."""
    try:
        if self.request.retries < 2 or random.random() < 0.3:
            raise OSError(f"connection reset while fetching {url}")
    except OSError as exc:
        raise self.retry(exc=exc) from exc
    return f"fetched {url} after {self.request.retries} retries"


@app.task
def divide(x: float, y: float) -> float:
    return x / y
