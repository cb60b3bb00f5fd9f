"""A worker's Prometheus metrics (``taskq worker --metrics-port N``), via prometheus_client.

Counted where the worker's events are sent, whether task events are on or not: tasks
received, started, succeeded, failed, retried, revoked and rejected, and a runtime
histogram, each per task name. Read when scraped: tasks running and held (prefetched), the
depth of each queue the worker consumes and of the dead-letter queue, and the broker
reconnects. Labels are task names only, and only the names registered in the app (any
other is counted under ``(unregistered)``), so a stream of bad messages cannot grow the
series without bound; never a task id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import states
from ..depths import QueueDepths
from ..exceptions import ConfigurationError
from ..metrics import OUTCOMES, RUNTIME_BUCKETS

if TYPE_CHECKING:
    from kombu import Queue

    from ..app import Taskq

logger = logging.getLogger(__name__)

UNREGISTERED = "(unregistered)"
DEPTH_CACHE_SECONDS = 5.0  # a scrape every second must not ask the broker every second


class WorkerMetrics:
    """The worker's metrics in a registry of their own, served on one port."""

    def __init__(self, app: Taskq, hostname: str, queues: Sequence[Queue], dead_letter: str):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ConfigurationError(
                f"--metrics-port needs prometheus_client ({exc}): pip install 'taskq[metrics]'"
            ) from exc
        self.app = app
        self.registry = CollectorRegistry()
        by_task = ("task",)
        reg = self.registry
        self._received = Counter("taskq_tasks_received", "Task messages received.", by_task,
                                 registry=reg)  # fmt: skip
        self._started = Counter("taskq_tasks_started", "Tasks started.", by_task, registry=reg)
        self._ended = {
            outcome: Counter(f"taskq_tasks_{outcome}", f"Tasks {outcome}.", by_task, registry=reg)
            for outcome in OUTCOMES.values()
        }
        self._runtime = Histogram("taskq_task_runtime_seconds", "Runtime of tasks that ran.",
                                  by_task, buckets=RUNTIME_BUCKETS, registry=reg)  # fmt: skip
        self._reconnects = Counter("taskq_broker_reconnects", "Reconnects to the broker.",
                                   registry=reg)  # fmt: skip
        Gauge("taskq_worker_up", "1 while the worker runs.", ("worker",),
              registry=reg).labels(hostname).set(1)  # fmt: skip
        self.live = LiveCollector(app, hostname, queues, dead_letter)
        reg.register(self.live)
        self._server: Any = None

    def _task(self, name: str) -> str:
        return name if name in self.app.tasks else UNREGISTERED

    # -- from the consumer thread (and the pool's result thread)
    def received(self, name: str) -> None:
        self._received.labels(self._task(name)).inc()

    def started(self, name: str) -> None:
        self._started.labels(self._task(name)).inc()

    def ended(self, name: str, state: str, runtime: float | None = None) -> None:
        outcome = OUTCOMES.get(state)
        if outcome is None:
            return  # IGNORED and the like: neither success nor failure
        task = self._task(name)
        self._ended[outcome].labels(task).inc()
        if runtime is not None and state in (states.SUCCESS, states.FAILURE, states.RETRY):
            self._runtime.labels(task).observe(runtime)

    def reconnected(self) -> None:
        self._reconnects.inc()

    # -- the endpoint
    def serve(self, port: int, address: str) -> int:
        """Serve ``/metrics`` on a thread; the port bound (for ``port`` 0, the one chosen)."""
        from prometheus_client import start_http_server

        try:
            self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot serve metrics on {address}:{port}: {exc.strerror or exc}"
            ) from None
        bound: int = self._server.server_address[1]
        logger.info("Metrics on http://%s:%d/metrics", address, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.live.close()


class LiveCollector:
    """What is read at scrape time: the worker's load, and the depth of its queues."""

    def __init__(self, app: Taskq, hostname: str, queues: Sequence[Queue], dead_letter: str):
        self.app = app
        self.hostname = hostname
        self.queues = [q.name for q in queues]
        self.dead_letter = dead_letter
        self.running: Callable[[], int] = lambda: 0
        self.held: Callable[[], int] = lambda: 0
        self.depths = QueueDepths(app, DEPTH_CACHE_SECONDS)

    def describe(self) -> Iterable[Any]:
        return []  # read at scrape time only: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        running = GaugeMetricFamily("taskq_tasks_running", "Tasks running now.",
                                    labels=["worker"])  # fmt: skip
        running.add_metric([self.hostname], self.running())
        yield running
        held = GaugeMetricFamily("taskq_tasks_prefetched",
                                 "Task messages held by the worker, not started.",
                                 labels=["worker"])  # fmt: skip
        held.add_metric([self.hostname], self.held())
        yield held
        depths = self._read_depths()
        depth = GaugeMetricFamily("taskq_queue_depth", "Messages waiting in the queue.",
                                  labels=["queue"])  # fmt: skip
        for name in self.queues:
            if name in depths:
                depth.add_metric([name], depths[name])
        yield depth
        dead = GaugeMetricFamily("taskq_dead_letters", "Messages in the dead-letter queue.",
                                 labels=["queue"])  # fmt: skip
        if self.dead_letter in depths:
            dead.add_metric([self.dead_letter], depths[self.dead_letter])
        yield dead

    def _read_depths(self) -> dict[str, int]:
        return self.depths.read([*self.queues, self.dead_letter])

    def close(self) -> None:
        self.depths.close()


__all__ = ["LiveCollector", "WorkerMetrics"]
