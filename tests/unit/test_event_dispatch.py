"""Events without a broker: the dispatcher's buffer and arrays, the receiver's parsing, the
readable lines of `taskq events`, and the worker's monitor switches."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kombu import Connection

from taskq import Taskq
from taskq.cli_events import Lines
from taskq.events import (
    BATCH_MAX,
    FLUSH_SECONDS,
    MULTI_KEY,
    EventDispatcher,
    EventReceiver,
    _events,
    routing_key,
    utcoffset,
)
from taskq.exceptions import ConfigurationError
from taskq.message import TaskMessage, args_repr, kwargs_repr
from taskq.worker.monitor import Monitor


class Recorder(EventDispatcher):
    """A dispatcher whose publish records (key, decoded body) instead of sending."""

    def __init__(self, app: Taskq, **kw: Any):
        super().__init__(app, "w1@host", **kw)
        self.sent: list[tuple[str, Any]] = []
        self._producer = object()  # type: ignore[assignment]  # "connected"

    def publish(self, key: str, text: str) -> None:
        self.sent.append((key, json.loads(text)))


@pytest.fixture
def app() -> Taskq:
    return Taskq("t", broker="memory://")


def test_common_fields_and_routing_keys(app: Taskq) -> None:
    d = Recorder(app)
    d.send("worker-heartbeat", freq=2.0)
    key, event = d.sent[0]
    assert key == "worker.heartbeat" == routing_key("worker-heartbeat")
    assert {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"} <= set(event)
    assert event["type"] == "worker-heartbeat" and event["hostname"] == "w1@host"
    assert isinstance(event["utcoffset"], float) and event["utcoffset"] == utcoffset()
    d.send("worker-heartbeat")
    assert d.sent[1][1]["clock"] > event["clock"]


def test_buffered_task_events_go_as_arrays_and_worker_events_alone(app: Taskq) -> None:
    d = Recorder(app, buffered=True)
    for i in range(BATCH_MAX + 10):
        d.send("task-started", uuid=str(i))
    d.send("worker-heartbeat", freq=2.0)
    assert d.sent == [] and d.due()  # a full batch waits: due at once
    d.flush()
    keys = [key for key, _ in d.sent]
    assert keys == [MULTI_KEY, MULTI_KEY, "worker.heartbeat"]
    arrays = [body for key, body in d.sent if key == MULTI_KEY]
    assert [e["uuid"] for a in arrays for e in a] == [str(i) for i in range(BATCH_MAX + 10)]
    assert not d.pending


def test_a_full_array_goes_at_once_and_its_remainder_waits(app: Taskq) -> None:
    d = Recorder(app, buffered=True)
    d.flush(force=True)  # the interval starts now
    for i in range(BATCH_MAX + 3):
        d.send("task-started", uuid=str(i))
    d.flush()
    assert [(key, len(body)) for key, body in d.sent] == [(MULTI_KEY, BATCH_MAX)]
    assert d.pending == 3


def test_hot_task_events_are_the_json_a_dict_would_give(app: Taskq) -> None:
    # The monitor writes received/started/succeeded as text: the same members, values and
    # escapes as the general path, for any strings a task may carry.
    odd = 'quote " back \\ newline \n tab \t nul \x00 é 雪 \U0001f600'
    msg = TaskMessage(
        id=f"id-{odd}", task="proj.add", args=(odd, 1.5), kwargs={"k": odd}, retries=2,
        root_id="r", parent_id=None, eta=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )  # fmt: skip
    monitor = Monitor(app, "w1@host", task_events=True, heartbeat=None)
    monitor.dispatcher = recorder = Recorder(app, buffered=True)
    monitor.received(SimpleNamespace(message=msg))  # type: ignore[arg-type]
    monitor.started(msg.id, msg.task)
    monitor.succeeded(msg.id, odd, 0.25)
    monitor.task("task-retried", msg.id, exception=odd, traceback="")
    recorder.flush(force=True)
    (key, events), = recorder.sent  # fmt: skip
    assert key == MULTI_KEY
    assert [e["type"] for e in events] == [
        "task-received", "task-started", "task-succeeded", "task-retried",
    ]  # fmt: skip
    common = {"hostname": "w1@host", "utcoffset": utcoffset(), "pid": os.getpid(), "uuid": msg.id}
    for e in events:
        assert {k: e[k] for k in common} == common
        assert isinstance(e["timestamp"], float) and isinstance(e["clock"], int)
    assert [e["clock"] for e in events] == sorted({e["clock"] for e in events})
    received, started, succeeded, retried = events
    assert received["name"] == "proj.add" and received["retries"] == 2
    assert received["args"] == args_repr(msg) and "雪" in received["args"]
    assert received["kwargs"] == kwargs_repr(msg)
    assert (received["root_id"], received["parent_id"]) == ("r", None)
    assert (received["eta"], received["expires"]) == ("2026-01-02T03:04:05+00:00", None)
    assert set(started) == {*common, "timestamp", "clock", "type"}
    assert (succeeded["result"], succeeded["runtime"]) == (odd, 0.25)
    assert (retried["exception"], retried["traceback"]) == (odd, "")


def test_a_few_events_wait_for_the_flush_interval(app: Taskq) -> None:
    d = Recorder(app, buffered=True)
    d.flush(force=True)  # the interval starts now
    d.send("task-started", uuid="a")
    d.flush()
    assert d.sent == [] and d.pending == 1
    deadline = time.monotonic() + 30
    while not d.due():
        assert time.monotonic() < deadline, "never due"
        time.sleep(FLUSH_SECONDS / 4)
    d.flush()
    assert [(key, [e["uuid"] for e in body]) for key, body in d.sent] == [(MULTI_KEY, ["a"])]


def test_task_events_off_sends_worker_events_only(app: Taskq) -> None:
    d = Recorder(app, buffered=True, task_events=False)
    d.send("task-received", uuid="x")
    d.send("worker-online", freq=2.0)
    d.flush(force=True)
    assert [key for key, _ in d.sent] == ["worker.online"]


def test_unsent_events_stay_for_the_next_connection(app: Taskq) -> None:
    d = Recorder(app, buffered=True)
    d.send("task-started", uuid="kept")

    def down(key: str, text: str) -> None:
        raise ConnectionResetError("gone")

    d.publish = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        d.flush(force=True)
    assert d.pending == 1


def test_receiver_takes_arrays_and_objects(app: Taskq) -> None:
    assert _events([{"type": "a"}, "junk", {"type": "b"}]) == [{"type": "a"}, {"type": "b"}]
    assert _events({"type": "c"}) == [{"type": "c"}]
    assert _events("junk") == []
    seen: list[str] = []
    receiver = EventReceiver(
        app, Connection("memory://"), {"task-sent": seen.append, "*": seen.append}
    )
    receiver.dispatch({"type": "task-started", "clock": 41})
    receiver.dispatch({"type": "task-sent", "clock": 9000})  # a client's clock is not taken
    assert receiver.clock.value == 42
    assert len(seen) == 2


def test_only_json_events(app: Taskq) -> None:
    app.conf.event_serializer = "pickle"
    with pytest.raises(ConfigurationError, match="JSON only"):
        EventDispatcher(app, "w1@host")


def test_readable_lines_name_the_task_of_later_events() -> None:
    lines = Lines()
    now = time.time()
    received = lines({"type": "task-received", "hostname": "w1@h", "timestamp": now,
                      "uuid": "u1", "name": "proj.add", "args": "(2, 2)", "kwargs": "{}",
                      "eta": None, "retries": 0})  # fmt: skip
    assert "w1@h  task-received  proj.add[u1]  args=(2, 2) kwargs={} eta=None retries=0" in received
    done = lines({"type": "task-succeeded", "hostname": "w1@h", "timestamp": now, "uuid": "u1",
                  "result": "4", "runtime": 0.0012})  # fmt: skip
    assert done.endswith("task-succeeded  proj.add[u1]  result=4 runtime=0.0012s")
    beat = lines({"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": now, "active": 1,
                  "processed": 7, "loadavg": [0.5, 0.25, 0.0], "sw_ident": "py-celery",
                  "sw_ver": "5.7.0"})  # fmt: skip
    assert beat.endswith("active=1 processed=7 load=0.50,0.25,0.00 (py-celery 5.7.0)")


def test_dispatcher_to_receiver_on_memory(app: Taskq) -> None:
    # The real path on kombu's memory transport: the arrays a worker publishes arrive one
    # event at a time, in order, with worker events between them.
    with Connection("memory://") as conn:
        got: list[dict[str, Any]] = []
        receiver = EventReceiver(app, conn, {"*": got.append})
        receiver.queue(conn.default_channel).declare()
        sender = EventDispatcher(app, "w1@host", buffered=True)
        assert sender.connect(conn)
        for i in range(3):
            sender.send("task-succeeded", uuid=str(i), result=str(i), runtime=0.1)
        sender.send("worker-heartbeat", freq=2.0)
        sender.flush(force=True)
        assert receiver.capture(limit=4, timeout=10, wakeup=False) == 4
    assert [(e["type"], e.get("uuid")) for e in got] == [
        ("task-succeeded", "0"), ("task-succeeded", "1"), ("task-succeeded", "2"),
        ("worker-heartbeat", None),
    ]  # fmt: skip
