"""`async def` tasks on a real prefork worker on Redis: run to completion on a loop per
child that later tasks reuse, concurrency inside a task, and a soft time limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq import SoftTimeLimitExceeded, Taskq
from tests.integration.helpers import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def queue() -> str:
    return f"aio-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(redis_url: str, redis_backend_url: str, queue: str) -> Iterator[WorkerProcess]:
    env = {"AIO_BROKER": redis_url, "AIO_BACKEND": redis_backend_url, "AIO_QUEUE": queue}
    app = "tests.integration.async_tasks"
    with WorkerProcess(app, "-P", "prefork", "-c", "1", env=env) as process:
        yield process


@pytest.fixture(scope="module")
def client(redis_url: str, redis_backend_url: str, queue: str) -> Iterator[Taskq]:
    app = Taskq("aio-client", broker=redis_url, backend=redis_backend_url,
                task_default_queue=queue, set_as_current=False)  # fmt: skip
    yield app
    app.close()


def test_a_coroutine_task_runs_and_its_loop_is_reused(worker: WorkerProcess, client: Taskq) -> None:
    first = client.send_task("aio.loop").get(timeout=60)
    second = client.send_task("aio.loop").get(timeout=60)
    assert first == second  # one child (-c 1), one loop for both tasks
    assert first[0] != worker.pid
    assert client.send_task("aio.gather", (5,)).get(timeout=60) == [0, 1, 4, 9, 16]


def test_a_soft_time_limit_cancels_the_coroutine_and_the_child_goes_on(
    worker: WorkerProcess, client: Taskq, tmp_path: Path
) -> None:
    result = client.send_task("aio.slow", (str(tmp_path),))
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    assert (tmp_path / f"{result.id}.cleaned").read_text() == "yes"
    after = client.send_task("aio.loop").get(timeout=60)
    assert after[0] > 0  # the same child runs coroutine tasks after the cancelled one
