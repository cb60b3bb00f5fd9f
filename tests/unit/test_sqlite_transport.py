"""The embedded SQLite transport, driven through kombu's public API in one process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from taskq.exceptions import ConfigurationError
from taskq.transports.sqlite import Transport
from tests.integration.helpers import wait_for


def get_or_none(queue: Any) -> Any:
    try:
        return queue.get_nowait()
    except queue.Empty:
        return None


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker/b.sqlite3"  # tmp_path is absolute: four slashes


@pytest.fixture
def connect(url: str) -> Iterator[Callable[..., Connection]]:
    opened: list[Connection] = []

    def _connect(**options: Any) -> Connection:
        conn = Connection(url, transport=Transport, transport_options=options)
        conn.connect()
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.release()


def publish(conn: Connection, queue: str, bodies: list[Any], **kwargs: Any) -> None:
    producer = Producer(conn.default_channel)
    for body in bodies:
        producer.publish(body, routing_key=queue, declare=[Queue(queue)], **kwargs)


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = Connection(f"sqlite:///{tmp_path}/a/b.db", transport=Transport)
    assert absolute.transport.db_path == str(tmp_path / "a" / "b.db")
    assert (tmp_path / "a").is_dir()  # parent directories are created

    monkeypatch.chdir(tmp_path)
    relative = Connection("sqlite:///rel/c.db", transport=Transport)
    assert relative.transport.db_path == str(tmp_path / "rel" / "c.db")

    with pytest.raises(ValueError, match="local only"):
        Connection("sqlite://otherhost/tmp/x.db", transport=Transport).transport  # noqa: B018
    with pytest.raises(ValueError, match="needs a file"):
        Connection("sqlite://", transport=Transport).transport  # noqa: B018


def test_round_trip_with_ack(connect: Callable[..., Connection]) -> None:
    conn = connect()
    publish(conn, "q", [{"n": 1}, {"n": 2}])
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with Consumer(conn.default_channel, [Queue("q")], callbacks=[on_message]):
        conn.drain_events(timeout=5)
        conn.drain_events(timeout=5)
    assert received == [{"n": 1}, {"n": 2}]
    conn.release()

    again = connect().SimpleQueue("q")
    assert again.qsize() == 0
    with pytest.raises(again.Empty):
        again.get(timeout=0.2)  # acked means gone for good, even after close


def test_reject_requeue_and_reject(connect: Callable[..., Connection]) -> None:
    queue = connect().SimpleQueue("q")
    queue.put("a")
    queue.put("b")
    first = queue.get(timeout=5)
    assert first.payload == "a"
    first.requeue()
    redelivered = queue.get(timeout=5)
    assert redelivered.payload == "a"  # back in its old place, ahead of "b"
    assert redelivered.delivery_info.get("redelivered") is True
    redelivered.reject()  # no requeue: dropped
    second = queue.get(timeout=5)
    assert second.payload == "b"
    second.ack()
    assert queue.qsize() == 0


def test_priority_order_then_insertion_order(connect: Callable[..., Connection]) -> None:
    conn = connect()
    for body, priority in [("low", 1), ("high-1", 9), ("mid", 5), ("none", 0), ("high-2", 9)]:
        publish(conn, "q", [body], priority=priority)
    queue = conn.SimpleQueue("q")
    got = []
    for _ in range(5):
        message = queue.get(timeout=5)
        got.append(message.payload)
        message.ack()
    assert got == ["high-1", "high-2", "mid", "low", "none"]


def test_close_without_ack_restores(connect: Callable[..., Connection]) -> None:
    first = connect()
    publish(first, "q", ["only"])
    message = first.SimpleQueue("q").get(timeout=5)
    assert message.payload == "only"
    second = connect().SimpleQueue("q")
    assert second.qsize() == 0  # leased by `first`, so not visible
    first.release()  # closing without ack hands it back
    assert second.get(timeout=5).payload == "only"


def test_expired_lease_becomes_visible(connect: Callable[..., Connection]) -> None:
    holder = connect(visibility_timeout=0.5, lease_renew_interval=0.1)
    publish(holder, "q", ["stuck"])
    holder.SimpleQueue("q").get(timeout=5)
    renewer = holder.transport._renewer
    assert renewer is not None
    renewer.stopped.set()  # the owner lives but stops renewing, like a frozen process
    renewer.join(5)
    other = connect().SimpleQueue("q")
    message = wait_for(lambda: get_or_none(other), 10, "the expired lease")
    assert message.payload == "stuck"


def test_live_owner_keeps_its_lease(connect: Callable[..., Connection]) -> None:
    holder = connect(visibility_timeout=1.0, lease_renew_interval=0.1)
    publish(holder, "q", ["long task"])
    holder.SimpleQueue("q").get(timeout=5)
    other = connect().SimpleQueue("q")
    deadline = time.monotonic() + 3.0  # three visibility timeouts without the holder polling
    while time.monotonic() < deadline:
        assert other.qsize() == 0
        with pytest.raises(other.Empty):
            other.get_nowait()
        time.sleep(0.1)


def test_two_connections_never_share_a_message(connect: Callable[..., Connection]) -> None:
    publish(connect(), "q", list(range(100)))
    queues = [connect().SimpleQueue("q") for _ in range(2)]
    taken: list[list[int]] = [[], []]

    def consume(index: int) -> None:
        while True:
            try:
                message = queues[index].get(timeout=0.5)
            except queues[index].Empty:
                return
            taken[index].append(message.payload)
            message.ack()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(taken[0] + taken[1]) == list(range(100))


def test_size_and_purge_leave_leased_messages(connect: Callable[..., Connection]) -> None:
    conn = connect()
    publish(conn, "q", list(range(5)))
    queue = conn.SimpleQueue("q")
    assert queue.qsize() == 5
    held = queue.get(timeout=5)
    assert queue.qsize() == 4
    assert Queue("q", channel=conn.default_channel).purge() == 4
    assert queue.qsize() == 0
    held.requeue()
    assert queue.qsize() == 1


def test_basic_qos_limits_unacked(connect: Callable[..., Connection]) -> None:
    conn = connect()
    publish(conn, "q", ["a", "b", "c"])
    channel = conn.channel()
    channel.basic_qos(prefetch_count=1)
    received: list[Any] = []
    with Consumer(channel, [Queue("q")], callbacks=[lambda body, msg: received.append(msg)]):
        conn.drain_events(timeout=5)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.3)  # prefetch full: nothing more until the ack
        received[0].ack()
        conn.drain_events(timeout=5)
    assert [m.payload for m in received] == ["a", "b"]


def test_no_ack_consumption_deletes(connect: Callable[..., Connection]) -> None:
    conn = connect()
    publish(conn, "q", ["x"])
    queue = conn.SimpleQueue("q", no_ack=True)
    assert queue.get(timeout=5).payload == "x"
    conn.release()
    assert connect().SimpleQueue("q").qsize() == 0


def test_bindings_are_shared_between_connections(connect: Callable[..., Connection]) -> None:
    exchange = Exchange("tasks", type="topic")
    consumer_conn = connect()
    Queue("emails", exchange, routing_key="mail.*", channel=consumer_conn.default_channel).declare()
    producer_conn = connect()  # never declares the queue, only the exchange
    Producer(producer_conn.default_channel, exchange=exchange).publish("hi", routing_key="mail.x")
    assert consumer_conn.SimpleQueue("emails").get(timeout=5).payload == "hi"


def test_fanout_is_refused(connect: Callable[..., Connection]) -> None:
    conn = connect()
    with pytest.raises(ConfigurationError, match="fanout"):
        Exchange("broadcast", type="fanout", channel=conn.default_channel).declare()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(connect: Callable[..., Connection]) -> None:
    conn = connect()
    publish(conn, "q", ["parent's", "child's"])
    queue = conn.SimpleQueue("q")
    held = queue.get(timeout=5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            message = queue.get(timeout=5)  # same kombu objects, new SQLite connection
            message.ack()
            conn.release()  # must not hand back the parent's unacked message
            code = 0 if message.payload == "child's" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.qsize() == 0  # the parent's message is still leased to the parent
    held.ack()
