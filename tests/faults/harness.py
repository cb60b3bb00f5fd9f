"""What every fault scenario needs: a broker set-up, real workers, and broker-side views.

A ``Setup`` is one scenario on one broker: its queue, its extra settings, its ledger. The
worker processes and the test's own client are built from the same values (fault_tasks.py
reads them from FAULT_* variables), so both sides agree on every setting.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taskq import BrokerUnavailable, Taskq
from taskq.amqp import make_queue
from tests.faults.fault_tasks import WORK, make_app
from tests.faults.ledger import Ledger, Report
from tests.integration.helpers import WorkerProcess, wait_for
from tests.servers import alive, proc_table

APP = "tests.faults.fault_tasks"
BROKERS = ["redis", "amqp"]
CONCURRENCY = 2
PREFETCH_MULTIPLIER = 4  # taskq's default, spelled out
BATCH_SIZE = 16  # worker_batch_size's default
# The most messages a worker holds unacked, which bounds what a killed worker leaves to
# run again: for short tasks the window deepens beyond the multiplier, up to two full
# batches per process (worker_prefetch_seconds, left at its default here).
PREFETCH = CONCURRENCY * 2 * BATCH_SIZE


@dataclass
class Setup:
    """One scenario on one broker."""

    kind: str  # "redis" or "amqp"
    broker: str
    backend: str
    ledger_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return str(self.settings["task_default_queue"])

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.ledger_dir)

    def env(self) -> dict[str, str]:
        return {
            "FAULT_BROKER": self.broker,
            "FAULT_BACKEND": self.backend,
            "FAULT_LEDGER": str(self.ledger_dir),
            "FAULT_SETTINGS": json.dumps(self.settings),
        }

    def client(self) -> Taskq:
        return make_app(self.broker, self.backend, self.settings)

    def worker(
        self,
        *args: str,
        queues: str | None = None,
        concurrency: int = CONCURRENCY,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """A started prefork worker on this scenario's queue; killed at teardown."""
        proc = WorkerProcess(
            APP,
            "-P", "prefork",
            "-c", str(concurrency),
            "--prefetch-multiplier", str(PREFETCH_MULTIPLIER),
            "-Q", queues or self.queue,
            "-n", f"{self.queue}-{len(self.workers)}@%h",
            *args,
            env={**self.env(), **(env or {})},
        )  # fmt: skip
        self.workers.append(proc)
        return proc.start()

    def logs(self, tail: int = 1500) -> str:
        """The end of every worker's log, for assertion messages."""
        return "\n".join(f"--- worker {i}:\n{w.log()[-tail:]}" for i, w in enumerate(self.workers))

    def close(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(Exception):
                proc.kill()


def make_setup(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    name: str,
    broker: str | None = None,
    visibility_timeout: float | None = None,
    **settings: Any,
) -> Setup:
    """A scenario on the session's servers (or on ``broker``), with its own queue names.

    Results go to the session Redis (db 1) for both brokers: a broker killed by the test
    then never takes the results with it.
    """
    if broker is None:
        broker = request.getfixturevalue("redis_url" if kind == "redis" else "amqp_url")
    suffix = uuid.uuid4().hex[:6]
    settings.setdefault("task_default_queue", f"{name}-{kind}-{suffix}")
    if kind == "redis" and visibility_timeout is not None:
        options = dict(settings.pop("broker_transport_options", {}))
        options["visibility_timeout"] = visibility_timeout
        settings["broker_transport_options"] = options
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir(parents=True, exist_ok=True)
    backend = request.getfixturevalue("redis_backend_url")
    return Setup(kind, broker, backend, ledger_dir, settings)


@contextlib.contextmanager
def scenario(setup: Setup) -> Iterator[Taskq]:
    """The client app; every worker of the scenario is stopped afterwards, whatever happens."""
    app = setup.client()
    try:
        yield app
    finally:
        try:
            app.close()
        finally:
            setup.close()


@dataclass
class Publisher:
    """Publishes in a loop, noting which calls returned and which raised."""

    app: Taskq
    returned: list[tuple[str, float]] = field(default_factory=list)  # (id, when it returned)
    raised: list[tuple[str, str]] = field(default_factory=list)  # (id, the error)
    unexpected: list[str] = field(default_factory=list)  # errors other than the promised one
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        work = self.app.tasks[WORK]
        while not self.stop.is_set():
            task_id = str(uuid.uuid4())  # known even when the call raises
            try:
                work.apply_async((0.005,), task_id=task_id)
            except BrokerUnavailable as exc:  # the one clear error a publish may end in
                self.raised.append((task_id, repr(exc)[:200]))
                time.sleep(0.05)
                continue
            except Exception as exc:
                self.unexpected.append(repr(exc)[:300])
                time.sleep(0.05)
                continue
            self.returned.append((task_id, time.monotonic()))
            time.sleep(0.01)

    def settle(self, ledger: Ledger, within: float) -> Report:
        """Wait up to ``within`` for every publish that returned to run; the ledger's check."""
        sent = [task_id for task_id, _ in self.returned]
        eventually(lambda: set(sent) <= set(ledger.completions()), within)
        return ledger.check(sent)

    def raised_that_ran(self, ledger: Ledger) -> int:
        """Publishes that raised yet ran: the broker had them when the connection broke."""
        completions = ledger.completions()
        return sum(1 for task_id, _ in self.raised if completions.get(task_id))

    def resumed(self, ledger: Ledger, since: float) -> float | None:
        """Seconds from ``since`` to the first run of a task whose publish returned after it.

        Only a message published after the fault proves that the worker consumes again
        (not one it had taken before).
        """
        fresh = {task_id for task_id, when in self.returned if when > since}
        starts = [e["t"] for e in ledger.events() if e["event"] == "start" and e["id"] in fresh]
        return min(starts) - since if starts else None


# -- processes


def wait_gone(pids: Iterable[int], timeout: float = 20.0) -> None:
    gone = list(pids)
    wait_for(
        lambda: not any(alive(proc_table().get(p)) for p in gone),
        timeout,
        f"processes {gone} to exit",
    )


# -- broker-side views


def queue_length(app: Taskq, queue: str | None = None) -> int:
    """Messages ready in ``queue`` (default: the app's), not counting what a worker holds.

    Declared, not checked passively: an empty Redis queue does not exist as a key, and a
    dead-letter queue may not exist yet; the declaration is the one workers make.
    """
    with app.connection() as conn:
        bound = make_queue(queue or app.conf.task_default_queue)(conn.default_channel)
        return int(bound.queue_declare().message_count)


def locate(setup: Setup, app: Taskq, ids: Iterable[str]) -> dict[str, list[str]]:
    """Where on a Redis broker each id is (queue lists, unacked hash, parked set...).

    A diagnostic for a lost task: "nowhere" means the broker no longer has the message.
    RabbitMQ has no way to look without taking messages, so it is not searched.
    """
    wanted = list(ids)
    if setup.kind != "redis" or not wanted:
        return {}
    found: dict[str, list[str]] = {i: [] for i in wanted}
    with app.connection() as conn:
        client = conn.default_channel.client
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "hash":
                values = client.hvals(key)
            elif kind == "zset":
                values = client.zrange(key, 0, -1)
            else:
                continue
            blob = b"\n".join(values)
            for i in wanted:
                if i.encode() in blob:
                    found[i].append(key.decode(errors="replace"))
    return {i: keys or ["nowhere"] for i, keys in found.items()}


def eventually(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Wait up to ``timeout`` for ``predicate``; False if it never held.

    For waits whose failure the test reports itself, with its figures, right after.
    """
    try:
        wait_for(predicate, timeout, "", interval=interval)
    except AssertionError:
        return False
    return True
