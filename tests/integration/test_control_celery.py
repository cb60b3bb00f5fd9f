"""taskq's remote-control client and CLI driving a real Celery 5.7 worker.

The worker is ``python -m celery -A tests.integration.interop_tasks worker -P prefork``, a
subprocess on the session's RabbitMQ and on its Redis (results in Redis, where the Celery
worker marks revoked tasks). Every request names the worker (``destination``), so the
client returns as soon as it answered, and nothing else on the broker could answer in its
place. Waits are bounded and fail when they run out.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import taskq  # noqa: E402
from taskq.events import EventReceiver  # noqa: E402
from tests.integration import interop_tasks  # noqa: E402
from tests.integration.helpers import WorkerProcess, run_cli, wait_for  # noqa: E402

pytestmark = pytest.mark.integration

APP_MODULE = "tests.integration.interop_tasks"
BROKER_DB, BACKEND_DB = 9, 10  # of the session's Redis: other modules use 0, 1, 11 to 14
READY_TIMEOUT = 60.0
WAIT = 15.0  # for a reply: each request names the worker, so it returns when it answered
RESULT_TIMEOUT = 30.0


class CeleryWorker(WorkerProcess):
    """``python -m celery -A <module> worker ...``, started and stopped like taskq's."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, "worker", "-l", "info", *self.args]


@dataclass
class Fleet:
    broker: str  # "rabbitmq" or "redis"
    url: str
    node: str
    worker: CeleryWorker
    client: taskq.Taskq
    env: dict[str, str]

    @property
    def dest(self) -> list[str]:
        return [self.node]

    def cli(self, *args: str) -> Any:
        return run_cli("-A", APP_MODULE, *args, env=self.env)


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def _purge(url: str, names: Sequence[str]) -> None:
    with Connection(url, connect_timeout=10) as conn:
        for name in names:
            bound = _queue(name)(conn.default_channel)
            bound.declare()
            bound.purge()


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def fleet(request: pytest.FixtureRequest, redis_server: Any) -> Iterator[Fleet]:
    base = f"redis://127.0.0.1:{redis_server.port}"
    backend = f"{base}/{BACKEND_DB}"
    url = f"{base}/{BROKER_DB}" if request.param == "redis" else request.getfixturevalue("amqp_url")
    _purge(url, ["celery"])
    # An explicit host part: the node name is then known without asking anyone.
    node = f"celery-ctl-{uuid.uuid4().hex[:6]}@localhost"
    env = {
        "INTEROP_BROKER": url,
        "INTEROP_BACKEND": backend,
        "TASKQ_BROKER_URL": "",  # keep a developer's shell out of the configuration
        "TASKQ_RESULT_BACKEND": "",
    }
    worker = CeleryWorker(APP_MODULE, "-P", "prefork", "-c", "2", "-n", node, env=env)
    worker.start(wait_ready=False)
    client = interop_tasks.make_taskq(url, backend)
    try:
        # "<node> ready." comes last, once its mailbox is consumed.
        wait_for(
            lambda: " ready." in worker.log() or worker.proc.poll() is not None,  # type: ignore[union-attr]
            READY_TIMEOUT,
            "the Celery worker to be ready",
        )
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        yield Fleet(request.param, url, node, worker, client, env)
    finally:
        client.close()
        try:
            assert worker.stop() == 0, worker.log()[-4000:]
        finally:
            worker.kill()
        worker.log_file.unlink(missing_ok=True)


def test_ping(fleet: Fleet) -> None:
    assert fleet.client.control.ping(fleet.dest, timeout=WAIT) == [{fleet.node: {"ok": "pong"}}]
    inspect = fleet.client.control.inspect(fleet.dest, timeout=WAIT)
    assert inspect.ping() == {fleet.node: {"ok": "pong"}}


def test_inspect_registered_stats_and_active_queues(fleet: Fleet) -> None:
    inspect = fleet.client.control.inspect(fleet.dest, timeout=WAIT)
    registered = inspect.registered()
    assert registered is not None
    assert sorted(registered[fleet.node]) == sorted(interop_tasks.NAMES)  # celery.* left out
    stats = (inspect.stats() or {})[fleet.node]
    assert {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"} <= (
        set(stats)
    )
    assert stats["pid"] == fleet.worker.pid
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["broker"]["transport"] == ("amqp" if fleet.broker == "rabbitmq" else "redis")
    queues = (inspect.active_queues() or {})[fleet.node]
    assert [q["name"] for q in queues] == ["celery"]


def test_revoked_queued_task_never_runs(fleet: Fleet, tmp_path: Path) -> None:
    # The task waits in a queue the worker does not consume yet; revoked there, it is
    # dropped when the worker, told to consume that queue, receives it.
    control, queue = fleet.client.control, f"ctl-{uuid.uuid4().hex[:8]}"
    ran = tmp_path / "ran.txt"
    revoked = fleet.client.send_task("interop.note", [str(ran)], queue=queue)
    replies = control.revoke(revoked.id, fleet.dest, reply=True, timeout=WAIT)
    assert replies == [{fleet.node: {"ok": f"tasks {{'{revoked.id}'}} flagged as revoked"}}]
    inspect = control.inspect(fleet.dest, timeout=WAIT)
    assert revoked.id in (inspect.revoked() or {})[fleet.node]
    assert revoked.state == "REVOKED"  # the worker marks a revoked PENDING task at once

    added = control.add_consumer(queue, destination=fleet.dest, reply=True, timeout=WAIT)
    assert added == [{fleet.node: {"ok": f"add consumer {queue}"}}]
    after = fleet.client.send_task("interop.add", [2, 2], queue=queue)
    assert after.get(timeout=RESULT_TIMEOUT) == 4  # the queue is consumed...
    # ...and the revoked message, ahead of it in the queue, was dropped on receipt.
    wait_for(
        lambda: f"Discarding revoked task: interop.note[{revoked.id}]" in fleet.worker.log(),
        WAIT,
        "the worker to discard the revoked task",
    )
    assert not ran.exists()
    assert revoked.state == "REVOKED"

    cancelled = control.cancel_consumer(queue, destination=fleet.dest, reply=True, timeout=WAIT)
    assert cancelled == [{fleet.node: {"ok": f"no longer consuming from {queue}"}}]
    wait_for(
        lambda: queue not in {q["name"] for q in (inspect.active_queues() or {})[fleet.node]},
        WAIT,
        f"the worker to stop consuming {queue}",
    )


def test_rate_limit_and_time_limit(fleet: Fleet) -> None:
    control = fleet.client.control
    done = control.rate_limit("interop.mul", "100/m", fleet.dest, reply=True, timeout=WAIT)
    assert done == [{fleet.node: {"ok": "new rate limit set successfully"}}]
    inspect = control.inspect(fleet.dest, timeout=WAIT)
    listed = (inspect.registered("rate_limit") or {})[fleet.node]
    assert "interop.mul [rate_limit=100/m]" in listed
    done = control.rate_limit("no.such.task", "1/s", fleet.dest, reply=True, timeout=WAIT)
    assert done == [{fleet.node: {"error": "unknown task"}}]
    done = control.time_limit(
        "interop.mul", soft=30, hard=60, destination=fleet.dest, reply=True, timeout=WAIT
    )
    assert done == [{fleet.node: {"ok": "time limits set successfully"}}]
    assert fleet.client.send_task("interop.mul", [3, 4]).get(timeout=RESULT_TIMEOUT) == 12


def test_cli_against_the_celery_worker(fleet: Fleet) -> None:
    dest = ["-d", fleet.node, "-t", str(WAIT)]
    done = fleet.cli("inspect", "ping", "--json", *dest)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {fleet.node: {"ok": "pong"}}

    done = fleet.cli("status", *dest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"-> {fleet.node}: OK", "", "1 node online."]

    done = fleet.cli("inspect", "registered", *dest)
    assert done.returncode == 0, done.stderr
    assert "    * interop.add\n" in done.stdout and done.stdout.endswith("1 node online.\n")

    done = fleet.cli("inspect", "stats", "--json", *dest)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[fleet.node]["pool"]["max-concurrency"] == 2

    done = fleet.cli("control", "rate_limit", "interop.tsum", "5/s", *dest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"-> {fleet.node}: OK\n    new rate limit set successfully\n"

    task_id = str(uuid.uuid4())  # never sent: the revoke alone marks it in the backend
    done = fleet.cli("revoke", task_id, "--json", *dest)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        fleet.node: {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}
    }
    assert fleet.client.AsyncResult(task_id).state == "REVOKED"

    done = fleet.cli("status", "-d", "nobody@nowhere", "-t", "0.5")
    assert done.returncode == 69
    assert done.stderr.startswith("Error: No nodes replied within time constraint")


def test_taskq_reads_a_celery_workers_events(fleet: Fleet) -> None:
    # Started without -E: taskq's client turns its task events on, then taskq's receiver
    # reads its heartbeats and a task's events (Celery sends them as task.multi arrays).
    control = fleet.client.control
    done = control.enable_events(fleet.dest, reply=True, timeout=WAIT)
    assert done == [{fleet.node: {"ok": "task events enabled"}}]
    got: list[dict[str, Any]] = []
    with fleet.client.connection() as conn:
        receiver = EventReceiver(fleet.client, conn, {"*": got.append})
        events = receiver.itercapture(deadline=time.monotonic() + RESULT_TIMEOUT)
        for event in events:
            if event["type"] == "worker-heartbeat" and event["hostname"] == fleet.node:
                break
        result = fleet.client.send_task("interop.add", [20, 22])
        for event in events:
            if event.get("uuid") == result.id and event["type"] == "task-succeeded":
                break
    beat = next(e for e in got if e["type"] == "worker-heartbeat")
    assert beat["sw_ident"] == "py-celery" and beat["hostname"] == fleet.node
    mine = [e for e in got if e.get("uuid") == result.id]
    assert [e["type"] for e in mine] == ["task-received", "task-started", "task-succeeded"], got
    assert mine[0]["name"] == "interop.add" and mine[-1]["result"] == "42"
    assert result.get(timeout=RESULT_TIMEOUT) == 42
    done = control.disable_events(fleet.dest, reply=True, timeout=WAIT)
    assert done == [{fleet.node: {"ok": "task events disabled"}}]
