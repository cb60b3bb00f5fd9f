"""The fleet's metrics on the dashboard's ``/metrics``, from the events every worker sends.

The same names as a worker's own ``--metrics-port`` (docs/monitoring.md), labelled by task
name and, for the per-worker gauges, by worker: one scrape of the dashboard sees the whole
fleet, where scraping each worker needs each worker's port. Counted from task events, so
the task counters need workers started with ``-E``; worker up/running come from heartbeats,
which every worker sends. prometheus_client is imported when ``/metrics`` is first read.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..metrics import KINDS, RUNTIME_BUCKETS

if TYPE_CHECKING:
    from .poller import QueueView
    from .state import FleetState


def observe(runtimes: dict[str, list[int]], name: str, runtime: float) -> None:
    """Count ``runtime`` in its bucket (the last slot: above every bound), then its sum."""
    counts = runtimes.get(name)
    if counts is None:
        # One slot per bound, one for +Inf, and the sum of runtimes (as micro-seconds).
        counts = runtimes[name] = [0] * (len(RUNTIME_BUCKETS) + 2)
    counts[bisect.bisect_left(RUNTIME_BUCKETS, runtime)] += 1
    counts[-1] += round(runtime * 1e6)


class FleetCollector:
    """A prometheus_client collector reading the state and the poller when scraped."""

    def __init__(self, state: FleetState, queues: Callable[[], QueueView]):
        self.state = state
        self.queues = queues

    def describe(self) -> Iterable[Any]:
        return []  # read at scrape time only

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        counts, runtimes = self.state.counters()
        for kind in KINDS:
            family = CounterMetricFamily(f"taskq_tasks_{kind}", f"Tasks {kind}, from events.",
                                         labels=["task"])  # fmt: skip
            for (name, counted), n in sorted(counts.items()):
                if counted == kind:
                    family.add_metric([name], n)
            yield family
        yield _histogram(HistogramMetricFamily, runtimes)
        up = GaugeMetricFamily("taskq_worker_up", "1 while the worker sends heartbeats.",
                               labels=["worker"])  # fmt: skip
        running = GaugeMetricFamily("taskq_tasks_running", "Tasks running now (last heartbeat).",
                                    labels=["worker"])  # fmt: skip
        for worker in self.state.worker_rows():
            up.add_metric([worker["hostname"]], 1 if worker["online"] else 0)
            if worker["online"] and worker["active"] is not None:
                running.add_metric([worker["hostname"]], worker["active"])
        yield up
        yield running
        yield from _queue_families(GaugeMetricFamily, self.queues())


def _histogram(family_type: Any, runtimes: dict[str, list[int]]) -> Any:
    family = family_type("taskq_task_runtime_seconds", "Runtime of tasks that ran, from events.",
                         labels=["task"])  # fmt: skip
    for name, counts in sorted(runtimes.items()):
        buckets, total = [], 0
        for bound, count in zip([*map(str, RUNTIME_BUCKETS), "+Inf"], counts[:-1], strict=True):
            total += count
            buckets.append((bound, total))
        family.add_metric([name], buckets, sum_value=counts[-1] / 1e6)
    return family


def _queue_families(family_type: Any, view: QueueView) -> Iterator[Any]:
    depth = family_type("taskq_queue_depth", "Messages waiting in the queue.", labels=["queue"])
    dead = family_type("taskq_dead_letters", "Messages in the dead-letter queue.",
                       labels=["queue"])  # fmt: skip
    for queue in view.queues:
        if queue.depth is not None:
            (dead if queue.dead_letter else depth).add_metric([queue.name], queue.depth)
    yield depth
    yield dead


__all__ = ["FleetCollector", "observe"]
