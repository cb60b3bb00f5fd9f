"""What the dashboard knows of the fleet, built from its events, in bounded memory.

One lock guards it all: the event thread writes, the web server's threads read. Every
change bumps ``version``, and each task row remembers the version of its last change, so
a live page asks "what changed since N" and gets only that. Tasks are kept in the order
they last changed; past ``max_tasks`` the stalest are forgotten, so a fleet running 1,000
tasks a second holds the same memory after a minute as after a month. Workers are few,
but bounded too, and per-name counters (for ``/metrics``) stop growing at ``max_names``.

Events can arrive out of order (a batch from one worker, a heartbeat from another): a
task's state only moves forward, or to a later event's, so a late ``task-started`` does
not undo a ``task-succeeded``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import states
from ..metrics import KINDS
from .metrics import observe
from .series import SPAN, Point, Series

HIDDEN = "(hidden)"
OTHER = "(other)"
UNKNOWN = "(unknown)"
EVENTS_KEPT = 20  # per task, for its detail page
DEFAULT_FREQ = 2.0  # seconds between heartbeats when a worker has not said
STATE_OF = {
    "task-sent": states.PENDING,
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-retried": states.RETRY,
    "task-revoked": states.REVOKED,
    "task-rejected": states.REJECTED,
}
RANK = {states.PENDING: 0, states.RECEIVED: 1, states.STARTED: 2, states.RETRY: 3}
FINISHED = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED, states.REJECTED})
COUNTED = {f"task-{kind}": kind for kind in KINDS}  # event type -> its counter


@dataclass(slots=True)
class TaskRow:
    id: str
    name: str | None = None
    state: str = states.PENDING
    state_at: float = 0.0  # the timestamp of the event that set the state
    worker: str | None = None
    received: float | None = None
    started: float | None = None
    finished: float | None = None
    runtime: float | None = None
    args: str | None = None
    kwargs: str | None = None
    retries: int | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    eta: str | None = None
    expires: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    version: int = 0
    events: list[tuple[str, float, str | None]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "state": self.state, "worker": self.worker,
            "received": self.received, "started": self.started, "finished": self.finished,
            "runtime": self.runtime, "args": self.args, "kwargs": self.kwargs,
            "retries": self.retries, "version": self.version,
        }  # fmt: skip

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(), "result": self.result, "exception": self.exception,
            "traceback": self.traceback, "eta": self.eta, "expires": self.expires,
            "parent_id": self.parent_id, "root_id": self.root_id, "source": "events",
            "events": [{"type": t, "timestamp": ts, "hostname": h} for t, ts, h in self.events],
        }  # fmt: skip


@dataclass(slots=True)
class WorkerRow:
    hostname: str
    seen: float = 0.0  # local time of its last event
    freq: float = DEFAULT_FREQ
    gone: bool = False  # it said worker-offline
    active: int | None = None
    processed: int | None = None
    loadavg: list[float] | None = None
    last_heartbeat: float | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    pid: int | None = None
    pool_size: int | None = None
    queues: list[str] = field(default_factory=list)

    def online(self, now: float) -> bool:
        # Two missed beats and a margin for a loaded machine, as Celery's monitors allow.
        return not self.gone and now - self.seen <= self.freq * 2 + 5

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "hostname": self.hostname, "online": self.online(now), "pool_size": self.pool_size,
            "active": self.active, "processed": self.processed, "loadavg": self.loadavg,
            "last_heartbeat": self.last_heartbeat, "queues": list(self.queues),
            "sw_ident": self.sw_ident, "sw_ver": self.sw_ver, "pid": self.pid,
        }  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_tasks: int = 10_000
    max_workers: int = 1_000
    max_names: int = 1_000
    hide_args: bool = False


class FleetState:
    """Workers, recent tasks, counters and the chart's series, fed one event at a time."""

    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.time):
        self.limits = limits
        self.clock = clock
        self.lock = threading.Lock()
        self.version = 0
        self.tasks: OrderedDict[str, TaskRow] = OrderedDict()
        self.workers: dict[str, WorkerRow] = {}
        self.workers_version = 0  # the version of the last change to any worker
        self.counts: Counter[tuple[str, str]] = Counter()  # (name, kind) -> n
        self.runtimes: dict[str, list[int]] = {}  # name -> bucket counts (see metrics.py)
        self.names: set[str] = set()  # the task names counted under their own label
        self.series = Series()
        self.events_seen = 0

    # -- the event thread
    def apply(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type", ""))
        with self.lock:
            self.events_seen += 1
            if kind.startswith("worker-"):
                self._worker_event(kind, event)
            elif kind in STATE_OF:
                self._task_event(kind, event)

    def _worker_event(self, kind: str, event: Mapping[str, Any]) -> None:
        row = self._worker(event.get("hostname"))
        if row is None:
            return
        row.gone = kind == "worker-offline"
        row.freq = _float(event.get("freq")) or row.freq
        row.active = _int(event.get("active"), row.active)
        row.processed = _int(event.get("processed"), row.processed)
        loadavg = event.get("loadavg")
        if isinstance(loadavg, list | tuple):
            row.loadavg = [float(x) for x in loadavg[:3] if isinstance(x, int | float)]
        row.last_heartbeat = _float(event.get("timestamp")) or row.last_heartbeat
        row.sw_ident = _str(event.get("sw_ident")) or row.sw_ident
        row.sw_ver = _str(event.get("sw_ver")) or row.sw_ver
        row.pid = _int(event.get("pid"), row.pid)
        self._bump_workers()

    def _worker(self, hostname: Any) -> WorkerRow | None:
        if not isinstance(hostname, str) or not hostname:
            return None
        row = self.workers.get(hostname)
        if row is None:
            if len(self.workers) >= self.limits.max_workers:
                self._forget_a_worker()
            row = self.workers[hostname] = WorkerRow(hostname)
        row.seen = self.clock()
        return row

    def _forget_a_worker(self) -> None:
        stalest = min(self.workers.values(), key=lambda w: (not w.gone, w.seen))
        del self.workers[stalest.hostname]

    def _bump_workers(self) -> None:
        self.version += 1
        self.workers_version = self.version

    def _task_event(self, kind: str, event: Mapping[str, Any]) -> None:
        task_id = event.get("uuid")
        if not isinstance(task_id, str) or not task_id:
            return
        row = self._task(task_id)
        when = _float(event.get("timestamp")) or self.clock()
        hostname = _str(event.get("hostname"))
        if kind != "task-sent" and hostname:
            row.worker = hostname
            self._touch_worker(hostname)
        self._fill(row, kind, event, when)
        state = STATE_OF[kind]
        if _moves_to(row, state, when):
            row.state, row.state_at = state, when
        row.events.append((kind, when, hostname))
        del row.events[:-EVENTS_KEPT]
        self._count(row, kind)
        self.version += 1
        row.version = self.version

    def _task(self, task_id: str) -> TaskRow:
        row = self.tasks.get(task_id)
        if row is None:
            row = self.tasks[task_id] = TaskRow(task_id)
            while len(self.tasks) > self.limits.max_tasks:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(task_id)
        return row

    def _touch_worker(self, hostname: str) -> None:
        row = self.workers.get(hostname)
        if row is not None:
            row.seen = self.clock()  # a task event shows it alive as well as a beat does

    def _fill(self, row: TaskRow, kind: str, event: Mapping[str, Any], when: float) -> None:
        row.name = _str(event.get("name")) or row.name
        if kind in ("task-received", "task-sent"):
            row.args = self._hideable(event.get("args"))
            row.kwargs = self._hideable(event.get("kwargs"))
            row.retries = _int(event.get("retries"), row.retries)
            row.eta, row.expires = _str(event.get("eta")), _str(event.get("expires"))
            row.parent_id = _str(event.get("parent_id")) or row.parent_id
            row.root_id = _str(event.get("root_id")) or row.root_id
            if kind == "task-received":
                row.received = when
        elif kind == "task-started":
            row.started = when
        elif kind == "task-succeeded":
            row.result = self._hideable(event.get("result"))
            row.runtime = _float(event.get("runtime"))
        elif kind in ("task-failed", "task-retried"):
            row.exception = _str(event.get("exception"))
            row.traceback = _str(event.get("traceback")) or row.traceback
            if row.started is not None and when >= row.started:
                row.runtime = when - row.started  # these events carry none: the worker's clock
        if STATE_OF[kind] in FINISHED:
            row.finished = when

    def _hideable(self, value: Any) -> str | None:
        if value is None:
            return None
        return HIDDEN if self.limits.hide_args else str(value)

    def _count(self, row: TaskRow, kind: str) -> None:
        counter = COUNTED.get(kind)
        if counter is None:
            return
        name = self._metric_name(row.name)
        self.counts[(name, counter)] += 1
        if kind in ("task-succeeded", "task-failed"):
            self.series.add(self.clock(), kind == "task-succeeded", row.runtime)
            if row.runtime is not None:
                observe(self.runtimes, name, row.runtime)

    def _metric_name(self, name: str | None) -> str:
        if name is None:
            return UNKNOWN
        if name not in self.names:
            if len(self.names) >= self.limits.max_names:
                return OTHER  # a stream of made-up names must not grow the series
            self.names.add(name)
        return name

    # -- from the poller thread: what remote control says of each worker
    def set_worker_info(self, hostname: str, pool_size: int | None, queues: list[str]) -> None:
        with self.lock:
            row = self.workers.get(hostname)
            if row is None:
                return  # heard of by remote control only: its events will add it
            if (row.pool_size, row.queues) != (pool_size, queues):
                row.pool_size, row.queues = pool_size, queues
                self._bump_workers()

    # -- readers (take the lock themselves)
    def worker_rows(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.lock:
            return [self.workers[h].summary(now) for h in sorted(self.workers)]

    def online_workers(self) -> list[str]:
        now = self.clock()
        with self.lock:
            return [h for h, w in self.workers.items() if w.online(now)]

    def task_rows(
        self, name: str = "", state: str = "", worker: str = "", limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows that match, most recently changed first, and how many match in all."""
        with self.lock:
            rows = [r for r in self._newest_first() if _matches(r, name, state, worker)]
            return [r.summary() for r in rows[:limit]], len(rows)

    def changed_since(self, version: int, limit: int = 200) -> list[dict[str, Any]]:
        with self.lock:
            found: list[dict[str, Any]] = []
            for row in self._newest_first():
                if row.version <= version or len(found) >= limit:
                    break
                found.append(row.summary())
            return found

    def _newest_first(self) -> Iterator[TaskRow]:
        return reversed(self.tasks.values())

    def task_detail(self, task_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.tasks.get(task_id)
            return None if row is None else row.detail()

    def task_names(self) -> list[str]:
        with self.lock:
            return sorted({r.name for r in self.tasks.values() if r.name})

    def task_workers(self) -> list[str]:
        with self.lock:
            return sorted({r.worker for r in self.tasks.values() if r.worker} | set(self.workers))

    def by_state(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(r.state for r in self.tasks.values()))

    def chart(self, step: int = 60, span: int = SPAN) -> list[Point]:
        with self.lock:
            return self.series.points(self.clock(), step, span)

    def counters(self) -> tuple[dict[tuple[str, str], int], dict[str, list[int]]]:
        with self.lock:
            return dict(self.counts), {k: list(v) for k, v in self.runtimes.items()}


def _moves_to(row: TaskRow, state: str, when: float) -> bool:
    if row.state_at == 0.0 or when > row.state_at:
        return True
    if row.state in FINISHED:
        return False
    return RANK.get(state, 4) >= RANK.get(row.state, 4)


def _matches(row: TaskRow, name: str, state: str, worker: str) -> bool:
    return (
        (not name or row.name == name)
        and (not state or row.state == state)
        and (not worker or row.worker == worker)
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any, default: int | None = None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


__all__ = ["FleetState", "Limits", "TaskRow", "WorkerRow"]
