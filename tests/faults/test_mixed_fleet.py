"""F17: a Celery worker and a taskq worker on one Redis queue: Celery's holds are Celery's.

A Celery worker holds a countdown task unacknowledged until it is due, and never renews
that hold; Celery restores such a message only after its visibility timeout (3600 s by
default). A taskq worker on the same queue, with a lease of 3 s, must not restore it
sooner: it would run twice. taskq tells its own holds (which it renews) from anyone
else's by the ``taskq.held`` set the take script keeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.faults.report import Results
from tests.integration import interop_tasks
from tests.integration.helpers import ROOT, WorkerProcess, wait_for
from tests.integration.test_celery_interop import CeleryWorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]
APP = "tests.integration.interop_tasks"
BROKER_DB, BACKEND_DB = 13, 14  # of the session's Redis: other tests use db 0
COUNTDOWN = 15.0


@pytest.fixture
def urls(redis_server: Any) -> Iterator[tuple[str, str]]:
    base = f"redis://127.0.0.1:{redis_server.port}"
    yield f"{base}/{BROKER_DB}", f"{base}/{BACKEND_DB}"


@pytest.mark.timeout(180)
def test_f17_a_taskq_worker_leaves_what_a_celery_worker_holds(
    urls: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """F17: a Celery worker holds a countdown task; a taskq worker with a 3 s lease joins."""
    results = Results(request.config, "F17", "redis")
    broker, backend = urls
    queue = f"mixed-{uuid.uuid4().hex[:8]}"
    env = {
        "INTEROP_BROKER": broker,
        "INTEROP_BACKEND": backend,
        "TASKQ_BROKER_URL": "",
        "TASKQ_RESULT_BACKEND": "",
        "INTEROP_TASKQ_TRANSPORT": json.dumps(
            {"visibility_timeout": 3.0, "lease_renew_interval": 1.0, "unacked_sweep_interval": 1.0}
        ),
    }
    notes = tmp_path / "notes"
    client = interop_tasks.make_celery(broker, backend)
    store = redis.Redis.from_url(broker)
    celery = CeleryWorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", queue, env=env, cwd=ROOT)
    taskq = WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", queue, env=env, cwd=ROOT)
    try:
        celery.start()
        client.send_task("interop.note", (str(notes),), countdown=COUNTDOWN, queue=queue)
        # Celery took it and holds it, unacknowledged, until it is due.
        wait_for(lambda: store.llen(queue) == 0 and store.hlen("unacked") == 1, 30, "Celery's hold")
        taskq.start()
        # The countdown passes with both workers up: Celery runs the task when it is due.
        wait_for(notes.exists, COUNTDOWN + 60, "the task to run")
        wait_for(lambda: store.hlen("unacked") == 0, 30, "Celery's ack")
        taskq.stop()  # a warm stop: anything it took would run or go back to the queue now
        celery.stop()
        runs = notes.read_text().split()
        left = store.llen(queue)
        results.add(tasks=1, duplicates=len(runs) - 1, runs=len(runs), extra={"left": left})
        detail = f"runs={runs} left={left}\n--- taskq:\n{taskq.log()[-2500:]}"
        assert runs == ["celery"], detail
        assert left == 0 and store.hlen("unacked") == 0, detail
    finally:
        for process in (taskq, celery):
            process.kill()
        store.flushdb()
        store.close()
        client.close()
