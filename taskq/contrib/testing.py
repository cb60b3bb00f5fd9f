"""``start_worker``: a real worker in a thread of the test process, as Celery's testing tools.

On the memory transport (``memory://``) the worker and the test share one broker, in
memory; on a real broker it consumes like any worker. The default pool, ``solo``, runs
tasks in the worker's thread; ``threads`` runs several at once. (``prefork`` needs a real
broker: the memory transport lives in one process.)
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import TaskqError

if TYPE_CHECKING:
    from ..app import Taskq
    from ..worker.worker import Worker


class WorkerDidNotStart(TaskqError):
    """The test worker did not connect in time, or died starting."""


@contextlib.contextmanager
def start_worker(
    app: Taskq,
    concurrency: int = 1,
    pool: str = "solo",
    loglevel: str | int | None = None,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    **options: Any,
) -> Iterator[Worker]:
    """Run a worker for ``app`` in a thread while the block runs; yields the worker.

    It is ready (connected, consuming) when the block starts, unless
    ``perform_ping_check=False``. ``options`` are ``WorkerOptions`` fields (``queues``,
    ``hostname``, ...). At the end it stops warm and waits up to ``shutdown_timeout``;
    an error the worker died of is raised here, so a test cannot miss it.
    """
    from ..worker.worker import Worker, WorkerOptions

    if loglevel is not None:
        import logging

        logging.getLogger("taskq").setLevel(loglevel)
    options.setdefault("hostname", f"test-{uuid.uuid4().hex[:8]}@localhost")
    worker = Worker(app, WorkerOptions(pool=pool, concurrency=concurrency, **options))
    died: list[BaseException] = []

    def run() -> None:
        try:
            worker.start()
        except BaseException as exc:  # raised in the test's thread below
            died.append(exc)
            worker.ready.set()

    thread = threading.Thread(target=run, name=f"taskq-test-worker-{worker.hostname}", daemon=True)
    thread.start()
    try:
        if perform_ping_check and not worker.ready.wait(ping_task_timeout):
            raise WorkerDidNotStart(
                f"The test worker did not connect within {ping_task_timeout}s "
                f"(broker {app.broker_url!r})."
            )
        if died:
            raise WorkerDidNotStart(f"The test worker died starting: {died[0]!r}") from died[0]
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            worker.stop(cold=True)
            thread.join(shutdown_timeout)
    if thread.is_alive():
        raise WorkerDidNotStart(f"The test worker did not stop within {shutdown_timeout}s.")
    if died:
        raise died[0]


__all__ = ["WorkerDidNotStart", "start_worker"]
