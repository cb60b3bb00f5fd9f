"""taskq's py-amqp transport against a real RabbitMQ: messages of every size arrive whole."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import termios
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kombu import Consumer, Exchange, Producer, Queue

from taskq.broker import broker_connection
from taskq.transports.amqp import READ_SIZE, BufferedTCPTransport
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
def test_messages_of_every_size_arrive_whole_and_in_order(amqp_url: str) -> None:
    # Bodies from empty to several frames (RabbitMQ's frame_max is 128 KB) and several
    # reads long, sent back to back so that reads end in the middle of frames.
    sizes = [0, 1, 100, READ_SIZE - 50, READ_SIZE * 2 + 3, 1_000_000, 10, 300_000]
    bodies = [os.urandom(size) for size in sizes]
    name = f"frames-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, auto_delete=True)
    got: list[Any] = []
    with broker_connection(amqp_url) as conn:
        assert isinstance(conn.connection.transport, BufferedTCPTransport)
        with Consumer(
            conn.default_channel,
            [queue],
            callbacks=[lambda body, message: (got.append(body), message.ack())],
            accept=["application/data"],
        ):
            with broker_connection(amqp_url) as sender:
                producer = Producer(sender.default_channel)
                for body in bodies:
                    producer.publish(
                        body,
                        exchange=queue.exchange,
                        routing_key=name,
                        declare=[queue],
                        content_type="application/data",
                        content_encoding="binary",
                    )

            def all_in() -> bool:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
                return len(got) == len(bodies)

            wait_for(all_in, 30, f"{len(bodies)} messages")
    assert [len(body) for body in got] == sizes
    assert [body or b"" for body in got] == bodies  # kombu hands an empty body over as ""


def _queue_with(url: str, prefix: str, count: int) -> Queue:
    """A new queue holding ``count`` messages ``{"n": 0}``, ``{"n": 1}``..."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, durable=False)
    _publish(url, queue, count)
    return queue


def _receive(conn: Any, received: Callable[[], int], count: int) -> None:
    """Drain ``conn`` until ``received()`` reaches ``count``; fail after 20 s."""

    def enough() -> bool:
        with contextlib.suppress(TimeoutError):
            while received() < count:
                conn.drain_events(timeout=0.2)
        return received() >= count

    wait_for(enough, 20, f"{count} deliveries")


def _turn(conn: Any) -> None:
    """What the worker's consumer does between two waits: drain once, briefly."""
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=0.1)


def _publish(url: str, queue: Queue, count: int) -> None:
    with broker_connection(url) as sender:
        producer = Producer(sender.default_channel)
        for n in range(count):
            producer.publish(
                {"n": n}, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
            )


def _ready(url: str, queue: Queue) -> int:
    with broker_connection(url) as conn:
        return int(queue.bind(conn.default_channel).queue_declare(passive=True).message_count)


@pytest.mark.timeout(60)
def test_deferred_acks_go_as_one_frame_and_never_reach_a_held_delivery(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ten deliveries; the worker holds numbers 3 and 7 (running, or waiting for an ETA),
    # rejects number 5 and acks the rest in one turn. The acks in front of 3 go as one
    # multiple ack; those behind a held delivery one by one; none may settle 3 or 7.
    import amqp

    frames: list[tuple[int, bool]] = []
    send = amqp.Channel.basic_ack

    def counted(self: Any, tag: int, multiple: bool = False, **kwargs: Any) -> Any:
        frames.append((tag, multiple))
        return send(self, tag, multiple, **kwargs)

    monkeypatch.setattr(amqp.Channel, "basic_ack", counted)
    queue = _queue_with(amqp_url, "acks", 10)
    got: dict[int, Any] = {}
    with broker_connection(amqp_url) as conn:
        channel = conn.default_channel
        conn.transport.defer_acks(channel)
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.__setitem__(body["n"], m)]):
            _receive(conn, got.__len__, 10)
            for n in (0, 1, 2, 4, 6, 8, 9):
                got[n].ack()
            got[5].reject(requeue=False)
            assert frames == []  # noted, not sent
            _turn(conn)  # the flush comes before the wait
            first = got[0].delivery_tag
            assert frames == [(first + 2, True), *((first + n, False) for n in (4, 6, 8, 9))]
            assert channel._unsettled == {first + 3, first + 7}
            frames.clear()
            got[3].ack()
            got[7].ack()
            _turn(conn)
            assert frames == [(first + 7, True)]
            assert channel._unsettled == set()
            assert channel._delivered == []
    assert _ready(amqp_url, queue) == 0


@pytest.mark.timeout(60)
def test_the_books_of_a_channel_follow_what_it_holds(amqp_url: str) -> None:
    # Acked one by one (no deferring), behind one delivery held throughout, or merged:
    # what the channel keeps about its deliveries stays the size of what it holds.
    queue = _queue_with(amqp_url, "books", 600)
    got: list[Any] = []
    with broker_connection(amqp_url) as conn:
        channel = conn.default_channel
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.append(m)]):
            _receive(conn, got.__len__, 200)  # at least: a drain hands over all it read
            held, first_part = got[0], len(got)
            for message in got[1:first_part]:
                message.ack()
            assert channel._unsettled == {held.delivery_tag}
            assert len(channel._delivered) <= 2 + 64
            conn.transport.defer_acks(channel)
            _receive(conn, got.__len__, 600)
            for message in got[first_part:]:
                message.ack()
            _turn(conn)
            assert channel._unsettled == {held.delivery_tag}
            assert len(channel._delivered) <= 2 + 64
            held.ack()
            _turn(conn)
            assert channel._unsettled == set()
            assert channel._delivered == []
    assert _ready(amqp_url, queue) == 0


@pytest.mark.timeout(60)
def test_held_deliveries_come_back_and_noted_acks_are_sent_on_close(amqp_url: str) -> None:
    queue = _queue_with(amqp_url, "acks", 6)
    got: dict[int, Any] = {}
    with broker_connection(amqp_url) as conn:
        channel = conn.default_channel
        conn.transport.defer_acks(channel)
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.__setitem__(body["n"], m)]):
            _receive(conn, got.__len__, 6)
            for n in (0, 2, 3, 5):
                got[n].ack()  # noted; only closing the connection sends them
    # Held 1 and 4 come back to the queue; the acked four do not.
    assert _ready(amqp_url, queue) == 2
    with broker_connection(amqp_url) as conn:
        back = [queue.bind(conn.default_channel).get(no_ack=True) for _ in range(2)]
    assert sorted(m.payload["n"] for m in back) == [1, 4]


@pytest.mark.timeout(60)
def test_copies_go_back_on_the_consuming_channel_with_their_ack_right_behind(
    amqp_url: str,
) -> None:
    # The worker returns a redelivered message as "copy, then ack", from inside the
    # delivery, on the channel that delivered it (a confirming one, as the worker's is).
    # Were the ack to wait (for the copy's confirm, or for the end of the consumer's turn),
    # a crash in between would leave the copy and the original both; a confirm awaited
    # there would also dispatch the next deliveries inside this one.
    from taskq import Taskq
    from taskq.worker.redelivery import Redelivery

    queue = _queue_with(amqp_url, "copy", 3)
    app = Taskq("copies", broker=amqp_url)
    redelivery = Redelivery(app, "test@host")
    returned: list[int] = []
    unsent_acks: list[int] = []

    try:
        conn = broker_connection(amqp_url)
        channel = conn.default_channel
        conn.transport.defer_acks(channel)

        def give_back(body: Any, message: Any) -> None:
            redelivery.give_back(message, queue, 1)
            returned.append(body["n"])
            unsent_acks.append(len(channel._acks))  # the ack has gone, not just been noted

        with Consumer(channel, [queue], callbacks=[give_back]):
            _receive(conn, returned.__len__, 3)
            # A crash now: nothing more is sent. The socket is closed only once RabbitMQ has
            # read to its end (a reset can make it drop what it had not read yet).
            conn.connection.transport.sock.shutdown(socket.SHUT_WR)
            # RabbitMQ has requeued what the crashed channel held once its consumer is gone.
            wait_for(lambda: _consumers(amqp_url, queue) == 0, 10, "RabbitMQ to see the crash")
        with contextlib.suppress(Exception):
            conn.close()
    finally:
        app.close()
    assert returned[:3] == [0, 1, 2] and set(unsent_acks) == {0}
    with broker_connection(amqp_url) as conn:
        bound = queue.bind(conn.default_channel)
        ready = [bound.get(no_ack=True) for _ in range(_ready(amqp_url, queue))]
    # Nothing lost. A copy given back again replaces itself, so each message is there once,
    # but not always: RabbitMQ, closing a connection, can drop an ack it had read and not
    # yet applied, and leave a copy and its original both, or the original alone if it
    # dropped the copy too (a duplicate or a retry, which at-least-once delivery allows;
    # see reliability.md). An original is told by its missing delivery count. (The copy's
    # delivery count on RabbitMQ is also read back by the fault suite's F3, every run.)
    assert {m.payload["n"] for m in ready} == {0, 1, 2}
    copies = [m for m in ready if "taskq_deliveries" in m.headers]
    originals = [m for m in ready if "taskq_deliveries" not in m.headers]
    for copy in copies:
        assert copy.headers["taskq_deliveries"] == 1
        assert copy.properties["delivery_mode"] == 2
        assert copy.content_type == "application/json"
    for original in originals:
        assert original.delivery_info["redelivered"], "an original that was never delivered"


def _consumers(url: str, queue: Queue) -> int:
    with broker_connection(url) as conn:
        return int(queue.bind(conn.default_channel).queue_declare(passive=True).consumer_count)


@pytest.mark.timeout(60)
def test_an_early_ack_goes_at_once_so_a_crash_after_the_start_loses_the_message(
    amqp_url: str,
) -> None:
    # acks_late=False promises at most once: the ack goes when a child accepts the task,
    # not with the rest of the consumer's turn. A crash right after must not bring it back.
    from taskq import Taskq
    from taskq.message import decode_body, parse
    from taskq.worker.redelivery import Redelivery
    from taskq.worker.request import AckPolicy, Request

    name = f"early-{uuid.uuid4().hex[:8]}"
    app = Taskq("early", broker=amqp_url, task_default_queue=name)

    @app.task(name="t.early", acks_late=False)
    def early() -> None: ...

    try:
        early.delay()
        queue = app.default_queue()
        got: list[Any] = []
        conn = broker_connection(amqp_url)
        channel = conn.default_channel
        conn.transport.defer_acks(channel)
        with Consumer(channel, [queue], callbacks=[lambda body, m: got.append(m)]):
            _receive(conn, got.__len__, 1)
            raw = got[0]
            body = decode_body(raw.body, raw.content_type, None, frozenset({"application/json"}))
            policy = AckPolicy.for_task(app, early)
            redelivery = Redelivery(app, "w@host")
            message = parse(raw.headers, body)
            Request(app, message, raw, policy, "w@host", queue, redelivery).on_accepted()
            assert not channel._acks  # the ack has gone, not just been noted
            # RabbitMQ handles one channel's commands in order: once this round trip on the
            # same channel is answered, the ack has been applied. Without the barrier the
            # crash below could make RabbitMQ drop the ack unhandled (see reliability.md),
            # and the message would come back although its ack had gone at once.
            queue.bind(channel).queue_declare(passive=True)
            # A crash now: the socket goes, nothing more is sent.
            conn.connection.transport.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            conn.close()
        # RabbitMQ has requeued what the crashed channel held once its consumer is gone.
        wait_for(lambda: _consumers(amqp_url, queue) == 0, 10, "RabbitMQ to see the crash")
        assert _ready(amqp_url, queue) == 0
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_one_drain_delivers_every_message_already_read_off_the_socket(amqp_url: str) -> None:
    # py-amqp hands over one message per drain_events; the worker handles a turn's messages
    # together (its batches, its merged ack), so all that one read brings in come at once.
    queue = _queue_with(amqp_url, "turn", 0)  # empty: nothing arrives with the consume-ok
    got: list[int] = []
    conn = broker_connection(amqp_url)
    with conn, Consumer(conn.default_channel, [queue], callbacks=[lambda b, m: got.append(b["n"])]):
        _publish(amqp_url, queue, 20)
        sock = conn.connection.transport.sock
        sizes = [-1]

        def all_in_the_socket() -> bool:
            # All 20 sent to this consumer, and the bytes waiting here no longer growing.
            waiting = bytearray(4)
            fcntl.ioctl(sock, termios.FIONREAD, waiting)
            sizes.append(int.from_bytes(waiting, "little"))
            return _ready(amqp_url, queue) == 0 and sizes[-1] == sizes[-2] > 0

        wait_for(all_in_the_socket, 20, "the deliveries to reach this socket", 0.1)
        conn.drain_events(timeout=5)
        assert got == list(range(20))


@pytest.mark.timeout(120)
def test_a_wait_ends_at_its_timeout_while_the_broker_sends_heartbeats(amqp_url: str) -> None:
    # With a 2 s heartbeat RabbitMQ sends a heartbeat frame every second. py-amqp waited
    # the whole timeout again after each frame that completed no message, so a 1.5 s
    # wait never ended, no heartbeat went back, and RabbitMQ closed the connection after
    # about 6 s. Each wait must end, and the connection live on.
    name = f"beats-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, auto_delete=True)
    got: list[Any] = []
    with broker_connection(amqp_url, heartbeat=2) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connection.heartbeat == 2
        with Consumer(
            conn.default_channel, [queue], callbacks=[lambda b, m: got.append(b)], accept=["json"]
        ):
            for _ in range(8):  # about 12 s: twice what RabbitMQ allows a silent client
                with pytest.raises(TimeoutError):
                    conn.drain_events(timeout=1.5)
                conn.heartbeat_check()
            with broker_connection(amqp_url) as sender:
                Producer(sender.default_channel).publish(
                    {"alive": True}, exchange=queue.exchange, routing_key=name, serializer="json"
                )
            conn.drain_events(timeout=10)
    assert got == [{"alive": True}]
