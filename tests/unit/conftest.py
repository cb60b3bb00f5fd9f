"""In-process fixtures: a memory:// app and a real Worker running in a thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from taskq import Taskq, shared
from taskq.worker.worker import Worker, WorkerOptions


@pytest.fixture
def restore_shared_tasks() -> Iterator[None]:
    """Shared tasks a test declares go to every app made afterwards: not to other tests'."""
    declared = list(shared._registry.declared)
    yield
    shared._registry.declared[:] = declared


@pytest.fixture
def app() -> Iterator[Taskq]:
    # kombu's memory transport is one broker per process: a fresh queue per test keeps
    # tests from seeing each other's messages.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    app = Taskq(
        "t",
        broker="memory://",
        backend="memory://",
        task_default_queue=queue,
        task_dead_letter_queue=f"{queue}.dead",
    )
    yield app
    app.close()


class RunningWorker:
    def __init__(self, app: Taskq, pool: str = "solo", **options: object):
        self.worker = Worker(app, WorkerOptions(pool=pool, **options))  # type: ignore[arg-type]
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> RunningWorker:
        def run() -> None:
            try:
                self.worker.start()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="test-worker", daemon=True)
        self.thread.start()
        return self

    def stop(self, cold: bool = False) -> None:
        assert self.thread is not None, "worker was not started"
        self.worker.stop(cold=cold)
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_worker(app: Taskq) -> Iterator[object]:
    """Call ``run_worker(pool="solo", concurrency=2)`` to start a worker on ``app``."""
    started: list[RunningWorker] = []

    def start(pool: str = "solo", **options: object) -> RunningWorker:
        worker = RunningWorker(app, pool, **options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        # Stopping again is harmless; it also raises what a worker thread died of, so a
        # crash after a test's last assertion still fails the test.
        worker.stop()
