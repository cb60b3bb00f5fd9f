"""Events from real taskq workers, read by Celery 5.7's own EventReceiver and by taskq's
(the CLI included), on Redis and RabbitMQ; and a real Celery worker's events read by taskq.

Each test collects events in a receiver thread and waits, with generous bounds, for the
ones it needs: a heartbeat from the worker, or the task events of one task id.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celery  # type: ignore[import-untyped]
import pytest

from taskq import Taskq
from taskq.events import EventReceiver
from tests.integration.helpers import ROOT, wait_for
from tests.integration.test_worker import Setup, make_setup

pytestmark = pytest.mark.integration
WAIT = 60
Event = dict[str, Any]


class Collector:
    """Events gathered by a receiver running in a thread of its own."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def add(self, event: Event) -> None:
        with self.lock:
            self.events.append(dict(event))

    def of(self, task_id: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.get("uuid") == task_id]

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.of(task_id)]

    def from_node(self, node: str, kind: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.get("hostname") == node and e["type"] == kind]

    def wait(self, check: Callable[[], object], what: str) -> None:
        wait_for(check, WAIT, what)


@pytest.fixture(scope="module", params=["redis", "amqp"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, Taskq, str]]:
    setup = make_setup(request.param, request, tmp_path_factory.mktemp(f"ev-{request.param}"))
    node = f"ev-{request.param}-{uuid.uuid4().hex[:6]}@itest"
    queue = f"ev-{request.param}-{uuid.uuid4().hex[:6]}"
    worker = setup.worker("-c", "2", "-Q", queue, "-n", node, "-E").start()
    client = setup.client()
    client.conf.task_default_queue = queue
    try:
        yield setup, client, node
    finally:
        client.close()
        assert worker.stop() == 0, worker.log()


@pytest.fixture
def celery_receiver(fleet: tuple[Setup, Taskq, str]) -> Iterator[Collector]:
    """Celery's EventReceiver, as Flower and `celery events` use it, in a thread."""
    setup = fleet[0]
    capp = celery.Celery("mon", broker=setup.broker, set_as_current=False)
    got = Collector()
    conn = capp.connection_for_read()
    receiver = capp.events.Receiver(conn, handlers={"*": got.add})
    thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": True}, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        receiver.should_stop = True
        thread.join(30)
        conn.release()


def test_celery_receiver_sees_worker_and_task_events(
    fleet: tuple[Setup, Taskq, str], celery_receiver: Collector
) -> None:
    _, app, node = fleet
    got = celery_receiver
    got.wait(lambda: got.from_node(node, "worker-heartbeat"), "a heartbeat from the worker")
    beat = got.from_node(node, "worker-heartbeat")[0]
    assert beat["sw_ident"] == "py-taskq" and beat["freq"] == 2.0
    assert {"active", "processed", "loadavg", "sw_ver", "sw_sys", "pid", "clock"} <= set(beat)
    assert isinstance(beat["utcoffset"], float) and len(beat["loadavg"]) == 3
    ok = app.tasks["itest.add"].delay(2, 2)
    bad = app.tasks["itest.fail"].delay("boom")
    assert ok.get(timeout=WAIT) == 4
    with pytest.raises(ValueError):
        bad.get(timeout=WAIT)
    done = ["task-received", "task-started", "task-succeeded"]
    got.wait(lambda: got.types(ok.id) == done, f"the events of {ok.id}: {got.types(ok.id)}")
    received, _, succeeded = got.of(ok.id)
    assert received["name"] == "itest.add" and received["args"] == "(2, 2)"
    assert received["hostname"] == node and received["retries"] == 0
    assert succeeded["result"] == "4" and succeeded["runtime"] >= 0
    failed = ["task-received", "task-started", "task-failed"]
    got.wait(lambda: got.types(bad.id) == failed, f"the events of {bad.id}: {got.types(bad.id)}")
    event = got.of(bad.id)[2]
    assert event["exception"] == "ValueError('boom', 42)"
    assert "Traceback" in event["traceback"] and "boom" in event["traceback"]
    # Celery's receiver keeps its clock in step with the worker's.
    assert all(isinstance(e["clock"], int) for e in got.of(ok.id))


def test_revoke_terminate_and_retry_events(
    fleet: tuple[Setup, Taskq, str], celery_receiver: Collector, tmp_path: Path
) -> None:
    _, app, node = fleet
    got = celery_receiver
    got.wait(lambda: got.from_node(node, "worker-heartbeat"), "a heartbeat from the worker")
    record = app.tasks["itest.record"]
    long = record.delay(str(tmp_path), "long", 60.0)
    wait_for(lambda: list(tmp_path.glob("long.started.*")), WAIT, "the task to start")
    app.control.revoke(long.id, terminate=True, signal="SIGKILL", destination=[node])
    got.wait(lambda: "task-revoked" in got.types(long.id), f"{long.id} revoked")
    revoked = got.of(long.id)[-1]
    assert revoked["terminated"] is True and revoked["signum"] == 9
    assert revoked["expired"] is False
    flaky = app.tasks["itest.flaky"].delay()
    assert flaky.get(timeout=WAIT) == 2
    retried = lambda: [e for e in got.of(flaky.id) if e["type"] == "task-retried"]  # noqa: E731
    got.wait(lambda: len(retried()) == 2, f"two retries of {flaky.id}: {got.types(flaky.id)}")
    assert retried()[0]["exception"] == "OSError('try again')"


def test_events_can_be_turned_off_and_on_remotely(
    fleet: tuple[Setup, Taskq, str], celery_receiver: Collector
) -> None:
    _, app, node = fleet
    got = celery_receiver
    got.wait(lambda: got.from_node(node, "worker-heartbeat"), "a heartbeat from the worker")
    replies = app.control.disable_events(destination=[node], reply=True, timeout=WAIT)
    assert replies == [{node: {"ok": "task events disabled"}}]
    quiet = app.tasks["itest.add"].delay(1, 1)
    assert quiet.get(timeout=WAIT) == 2
    replies = app.control.enable_events(destination=[node], reply=True, timeout=WAIT)
    assert replies == [{node: {"ok": "task events enabled"}}]
    loud = app.tasks["itest.add"].delay(3, 3)
    assert loud.get(timeout=WAIT) == 6
    got.wait(lambda: "task-succeeded" in got.types(loud.id), f"the events of {loud.id}")
    # Sent in order on one connection: had the first task sent any, they came before.
    assert got.of(quiet.id) == []
    clock = app.control.inspect(destination=[node], timeout=WAIT).clock()
    assert clock is not None and clock[node]["clock"] > 0


def test_taskq_receiver_and_cli(fleet: tuple[Setup, Taskq, str]) -> None:
    setup, app, node = fleet
    got = Collector()
    with app.connection() as conn:
        receiver = EventReceiver(app, conn, {"*": got.add})
        stop = threading.Event()

        def run() -> None:
            for _ in receiver.itercapture():
                if stop.is_set():
                    return

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        got.wait(lambda: got.from_node(node, "worker-heartbeat"), "a heartbeat (woken up)")
        result = app.tasks["itest.add"].delay(5, 5)
        assert result.get(timeout=WAIT) == 10
        got.wait(lambda: "task-succeeded" in got.types(result.id), f"the events of {result.id}")
        stop.set()
        thread.join(WAIT)
    # The command line: the JSON lines of --dump, ended by --count.
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "-A", "tests.integration.worker_tasks", "events",
         "--dump", "--count", "3", "--timeout", str(WAIT)],
        capture_output=True, text=True, timeout=WAIT + 30, cwd=ROOT,
        env={**os.environ, **setup.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) == 3 and all("type" in e and "clock" in e for e in events)
    assert any(e["hostname"] == node and e["type"] == "worker-heartbeat" for e in events)


def test_a_client_sends_task_sent(
    fleet: tuple[Setup, Taskq, str], celery_receiver: Collector
) -> None:
    setup, _, node = fleet
    got = celery_receiver
    got.wait(lambda: got.from_node(node, "worker-heartbeat"), "a heartbeat from the worker")
    app = setup.client()
    app.conf.task_send_sent_event = True
    app.conf.task_default_queue = f"ev-sent-{uuid.uuid4().hex[:6]}"  # nobody consumes it
    try:
        result = app.tasks["itest.add"].apply_async((7, 8), countdown=600)
        got.wait(lambda: got.types(result.id) == ["task-sent"], f"task-sent of {result.id}")
        sent = got.of(result.id)[0]
        assert sent["name"] == "itest.add" and sent["args"] == "(7, 8)"
        assert sent["queue"] == app.conf.task_default_queue and sent["eta"]
        assert sent["hostname"] == f"gen{os.getpid()}@{socket.gethostname()}"
    finally:
        app.close()


def test_online_heartbeats_and_offline(
    fleet: tuple[Setup, Taskq, str], celery_receiver: Collector, tmp_path: Path
) -> None:
    setup = fleet[0]
    node = f"ev-life-{uuid.uuid4().hex[:6]}@itest"
    got = celery_receiver
    queue = f"ev-life-{uuid.uuid4().hex[:6]}"
    worker = setup.worker("-c", "1", "-Q", queue, "-n", node, "--heartbeat-interval", "0.5")
    worker.start()
    try:
        got.wait(lambda: len(got.from_node(node, "worker-heartbeat")) >= 2, "two heartbeats")
    finally:
        assert worker.stop() == 0, worker.log()
    got.wait(lambda: got.from_node(node, "worker-offline"), "worker-offline")
    online = got.from_node(node, "worker-online")
    assert len(online) == 1 and online[0]["freq"] == 0.5
    offline = got.from_node(node, "worker-offline")[0]
    assert offline["timestamp"] >= max(
        e["timestamp"] for e in got.from_node(node, "worker-heartbeat")
    )
    # Without -E a worker sends no task event.
    assert not [e for e in got.events if e["hostname"] == node and e["type"].startswith("task-")]
    quiet = setup.worker("-c", "1", "-Q", queue, "-n", f"q-{node}", "--without-heartbeat")
    quiet.start()
    assert quiet.stop() == 0, quiet.log()
    # A later event from the fleet's worker marks the point by which anything the quiet
    # one sent (at its start, seconds earlier) would have arrived.
    stopped = time.time()
    fleet[1].control.heartbeat(destination=[fleet[2]])
    got.wait(
        lambda: any(e["timestamp"] > stopped for e in got.from_node(fleet[2], "worker-heartbeat")),
        "a heartbeat sent after the quiet worker stopped",
    )
    assert not [e for e in got.events if e["hostname"] == f"q-{node}"]


@pytest.mark.timeout(120)
def test_a_quiet_receiver_keeps_its_rabbitmq_connection(
    amqp_url: str, redis_backend_url: str
) -> None:
    # A receiver sends nothing but heartbeats: with a 2 s heartbeat RabbitMQ closes a
    # connection silent for about 6 s. An event sent after eight quiet seconds arrives.
    from taskq.events import EventDispatcher
    from tests.integration.worker_tasks import make_app

    app = make_app(amqp_url, redis_backend_url, None, broker_heartbeat=2)
    got: list[dict[str, Any]] = []

    def send() -> None:
        with app.connection() as conn:
            dispatcher = EventDispatcher(app, "quiet@itest")
            dispatcher.connect(conn)
            dispatcher.send("worker-heartbeat")

    later = threading.Timer(8, send)
    try:
        with app.connection() as conn:
            receiver = EventReceiver(app, conn, {"*": got.append})
            later.start()
            # Other tests' workers may send events too; they are no traffic *to* RabbitMQ.
            deadline = time.monotonic() + 60
            for event in receiver.itercapture(wakeup=False, deadline=deadline):
                if event["hostname"] == "quiet@itest":
                    break
    finally:
        later.cancel()
        app.close()
    assert [e["type"] for e in got if e["hostname"] == "quiet@itest"] == ["worker-heartbeat"]
