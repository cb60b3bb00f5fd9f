"""Tasks for the fault suite. A worker builds ``app`` from FAULT_* variables; the test builds
its client with ``make_app`` and the same values, so both sides share one configuration.

FAULT_SETTINGS is a JSON object of extra settings (visibility timeout, queue names, dead
letter queue, message size limit, ...). FAULT_LEDGER is the folder every execution is
written to (see ledger.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from taskq import Taskq
from tests.faults.ledger import record

WORK = "faults.work"
DIE_ONCE = "faults.die_once"
POISON = "faults.poison"
COLLECT = "faults.collect"


def make_app(broker: str | None, backend: str | None, settings: dict[str, Any]) -> Taskq:
    app = Taskq("faults", broker=broker or None, backend=backend or None, **settings)
    register(app)
    return app


def _ledger() -> str:
    return os.environ["FAULT_LEDGER"]


def _attempt(request: Any) -> int | None:
    # Earlier deliveries that ended without an outcome, as the worker counts them.
    value = (request.headers or {}).get("taskq_deliveries")
    return value if isinstance(value, int) else None


def _start(task: Any) -> str:
    task_id: str = task.request.id
    record(_ledger(), "start", task_id, attempt=_attempt(task.request))
    return task_id


def _die(task_id: str) -> None:
    # Note the death first: the ledger then knows this run ended here, not later.
    record(_ledger(), "die", task_id)
    os.kill(os.getpid(), signal.SIGKILL)


def register(app: Taskq) -> None:
    @app.task(name=WORK, bind=True)
    def work(self: Any, seconds: float = 0.005) -> str:
        task_id = _start(self)
        time.sleep(seconds)
        record(_ledger(), "end", task_id)
        return task_id

    @app.task(name=DIE_ONCE, bind=True)
    def die_once(self: Any) -> str:
        # The first run of each id kills its own pool child; the redelivery finds the mark.
        task_id = _start(self)
        mark = Path(_ledger(), f"died-{task_id}")
        if not mark.exists():
            mark.write_text("")
            _die(task_id)
        record(_ledger(), "end", task_id)
        return task_id

    @app.task(name=COLLECT, bind=True)
    def collect(self: Any, values: list[Any]) -> int:
        # A chord body: each of its runs is in the ledger.
        task_id = _start(self)
        record(_ledger(), "end", task_id)
        return len(values)

    @app.task(name=POISON, bind=True)
    def poison(self: Any) -> None:
        _die(_start(self))


app = make_app(
    os.environ.get("FAULT_BROKER"),
    os.environ.get("FAULT_BACKEND"),
    json.loads(os.environ.get("FAULT_SETTINGS") or "{}"),
)
