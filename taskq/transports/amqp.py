"""kombu's py-amqp transport with a wake-up pipe and buffered frame reads.

py-amqp reads frames from a blocking socket, so a worker that waits for RabbitMQ could
only notice its own finished tasks by polling with a short timeout. Here ``drain_events``
first waits, with ``poll``, for either the socket or a ``Waker``; only when the socket
has data does py-amqp read it.

py-amqp also reads each frame in three ``recv`` calls (header, payload, end octet), nine
for a message, each exactly the size it needs. ``BufferedTCPTransport`` reads what the
socket has, up to 64 KB at a time, and parses frames out of that. Everything else is
kombu's and py-amqp's.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import math
import select
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from amqp import spec
from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport
from kombu.transport import pyamqp
from kombu.transport.native_delayed_delivery import (
    MAX_LEVEL,
    MAX_NUMBER_OF_BITS_TO_USE,
    calculate_routing_key,
    level_name,
)

from .compressed import HeldAmqpMessage
from .wakeup import Waker

READ_SIZE = 65536
FRAME_END = 0xCE
_HEADER = struct.Struct(">BHI")  # type, channel, payload size
_RETRY = (errno.EAGAIN, errno.EINTR)
# py-amqp's list: errors after which the connection is still usable.
_UNAVAILABLE = {errno.EAGAIN, errno.EINTR, errno.ENOENT, errno.EWOULDBLOCK}


class BufferedTCPTransport(TCPTransport):
    """py-amqp's plain TCP transport, reading the socket in large pieces.

    Bytes read and not yet parsed stay in ``_buffer`` from ``_pos``; a read that times
    out mid-frame consumes nothing, so the next one starts the frame again.
    """

    _buffer = b""  # py-amqp makes a new transport for every connect
    _pos = 0

    def buffered(self) -> int:
        """Bytes read from the socket and not parsed yet."""
        return len(self._buffer) - self._pos

    def _fill(self, n: int, initial: bool = False) -> None:
        """Read until at least ``n`` unparsed bytes are buffered."""
        have = len(self._buffer) - self._pos
        parts = [self._buffer[self._pos :]] if have else []
        try:
            while have < n:
                try:
                    chunk = self._quick_recv(max(n - have, READ_SIZE))
                except OSError as exc:
                    if exc.errno not in _RETRY:
                        raise
                    if initial and self.raise_on_initial_eintr:
                        raise TimeoutError() from exc
                    continue
                if not chunk:
                    raise OSError("Server unexpectedly closed connection")
                parts.append(chunk)
                have += len(chunk)
        finally:
            self._buffer = b"".join(parts)
            self._pos = 0

    @contextlib.contextmanager
    def having_timeout(self, timeout: float | None) -> Iterator[Any]:
        # Setting a socket's timeout is a system call, and py-amqp sets and restores it
        # around every frame it reads: a frame already buffered needs neither.
        if timeout is None or self.frame_buffered():
            yield self.sock
        else:
            with super().having_timeout(timeout) as sock:
                yield sock

    def frame_buffered(self) -> bool:
        """Whether a whole frame is buffered: reading it needs no system call."""
        have = len(self._buffer) - self._pos
        return have >= 7 and have >= _HEADER.unpack_from(self._buffer, self._pos)[2] + 8

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        try:
            if len(self._buffer) - self._pos < 7:
                self._fill(7, True)
            frame_type, channel, size = _HEADER.unpack_from(self._buffer, self._pos)
            if len(self._buffer) - self._pos < size + 8:
                self._fill(size + 8)
            start = self._pos + 7
            payload = self._buffer[start : start + size]
            frame_end = self._buffer[start + size]
            self._pos = start + size + 1
        except TimeoutError:
            raise
        except OSError as exc:
            if exc.errno not in _UNAVAILABLE:
                self.connected = False
            raise
        if frame_end != FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {frame_end:#04x} while expecting 0xce")
        return frame_type, channel, payload


class Channel(pyamqp.Channel):
    """kombu's py-amqp channel, able to send the acks of a consumer's turn as one frame.

    With ``defer_acks`` set (the worker sets it on the channel it consumes from),
    ``basic_ack`` only notes the tag and ``flush_acks`` sends what was noted: the transport
    calls it before it waits for the broker, and on close. A ``multiple`` ack settles every
    unsettled delivery up to its tag, so it covers only the run of acked tags at the front
    of the unsettled ones, and stops at the first delivery still held (a task running, an
    ETA task waiting); acks behind that go one by one, in the same flush.
    """

    Message = HeldAmqpMessage  # a compressed body stays so until the worker reads it

    defer_acks = False
    delayed_queues: frozenset[str] = frozenset()  # bound to the delay queues: can park

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered: list[int] = []  # a heap of delivery tags; some settled since
        self._unsettled: set[int] = set()
        self._acks: list[int] = []  # noted by basic_ack, not sent yet

    def _on_basic_deliver(self, consumer_tag: str, delivery_tag: int, *rest: Any) -> None:
        if consumer_tag not in self.no_ack_consumers:
            self._track(delivery_tag)
        super()._on_basic_deliver(consumer_tag, delivery_tag, *rest)

    def basic_get(self, queue: str = "", no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack, **kwargs)
        if message is not None and not no_ack:
            self._track(message.delivery_info["delivery_tag"])
        return message

    def _track(self, tag: int) -> None:
        heapq.heappush(self._delivered, tag)
        self._unsettled.add(tag)

    def basic_ack(self, delivery_tag: int, multiple: bool = False, **kwargs: Any) -> None:
        if self.defer_acks and not multiple:
            self._acks.append(delivery_tag)
            return
        self.flush_acks()
        self._settle(delivery_tag, multiple)
        super().basic_ack(delivery_tag, multiple, **kwargs)

    def basic_reject(self, delivery_tag: int, requeue: bool, **kwargs: Any) -> None:
        self._settle(delivery_tag, False)
        super().basic_reject(delivery_tag, requeue, **kwargs)

    def _settle(self, tag: int, up_to: bool) -> None:
        if up_to:
            self._unsettled.difference_update([t for t in self._unsettled if t <= tag])
        else:
            self._unsettled.discard(tag)
        self._prune()

    def _prune(self) -> None:
        # Drop settled tags from the front of the heap, and rebuild it when tags settled
        # behind a held one make up most of it: its size follows what is held.
        delivered, unsettled = self._delivered, self._unsettled
        while delivered and delivered[0] not in unsettled:
            heapq.heappop(delivered)
        if len(delivered) > 2 * len(unsettled) + 64:
            self._delivered = sorted(unsettled)

    def flush_acks(self) -> None:
        """Send the acks noted since the last flush."""
        if not self._acks:
            return
        acked = set(self._acks)
        self._acks = []
        delivered, unsettled = self._delivered, self._unsettled
        last = None
        while delivered:
            tag = delivered[0]
            if tag in acked:
                acked.discard(tag)
                unsettled.discard(tag)
                last = tag
            elif tag in unsettled:
                break  # still held: a multiple ack must not reach it
            heapq.heappop(delivered)
        if last is not None:
            super().basic_ack(last, True)
        for tag in sorted(acked):
            unsettled.discard(tag)
            super().basic_ack(tag, False)
        self._prune()

    def send_copy(
        self, queue: str, body: bytes, headers: dict[str, Any], properties: dict[str, Any]
    ) -> None:
        """Put a copy of a message delivered here on ``queue``, on this channel.

        RabbitMQ handles one channel's commands in order: an ack of the original sent
        after this is handled after the copy is queued, with no confirm to wait for in
        between. A crash right after can leave both (RabbitMQ drops what a closing
        connection sent that it had not handled yet): a duplicate, never a loss.
        """
        self._publish_copy("", queue, body, headers, properties)

    def _publish_copy(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None:
        properties = dict(properties)
        copy = self.prepare_message(
            body,
            priority=properties.pop("priority", None),
            content_type=properties.pop("content_type", None),
            content_encoding=properties.pop("content_encoding", None),
            headers=headers,
            properties=properties,
        )
        # The basic.publish method itself: py-amqp's publish reads the socket first (for a
        # connection.blocked notice), and its confirming variant reads until the confirm;
        # either would dispatch further deliveries in the middle of this one.
        self.send_method(
            spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, False, False), copy
        )

    def can_delay(self, queue: str) -> bool:
        """Whether ``queue`` is bound to the delay queues (taskq/worker/delayed.py)."""
        return queue in self.delayed_queues

    def delay_copy(
        self,
        queue: str,
        due: float,
        body: bytes,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None:
        """Put a copy of a message delivered here in the delay queues, back on ``queue``
        at ``due`` (epoch seconds, rounded up to the next whole second).

        The copy enters the cascade of delay queues (kombu's native delayed delivery, as
        Celery's workers declare it) with the delay written in its routing key, bit by bit,
        and comes out on the delivery exchange, which routes it to ``queue`` by name. In
        order on this channel, as ``send_copy``: before the ack of the original.
        """
        countdown = max(1, math.ceil(due - time.time()))
        if countdown >= 1 << MAX_NUMBER_OF_BITS_TO_USE:
            raise ValueError(f"an ETA {countdown} s away is beyond the delay queues' reach")
        key = calculate_routing_key(countdown, queue)
        self._publish_copy(level_name(MAX_LEVEL), key, body, headers, properties)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_open and self.connection is not None:
            self.flush_acks()
        return super().close(*args, **kwargs)


class Connection(pyamqp.Connection):
    """kombu's py-amqp connection, on ``BufferedTCPTransport`` unless it is TLS."""

    Channel = Channel

    def Transport(
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(
                host, connect_timeout, ssl, read_timeout, write_timeout, **kwargs
            )
        return BufferedTCPTransport(
            host,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            **kwargs,
        )


class Transport(pyamqp.Transport):
    """For ``amqp://`` and ``pyamqp://``; ``amqps://`` keeps kombu's TLS transport."""

    Connection = Connection
    waker: Waker | None = None
    watched: tuple[int, ...] = ()

    def enable_wakeup(self, watch: Sequence[int] = ()) -> Callable[[], None]:
        """A thread-safe function that makes a waiting ``drain_events`` return at once.

        Input on any of the ``watch`` files also ends the wait.
        """
        if self.waker is None:
            self.waker = Waker()
        self.watched = tuple(watch)
        return self.waker.wake

    def defer_acks(self, channel: Any) -> None:
        """Send ``channel``'s acks together, before each wait for the broker (``Channel``)."""
        channel.defer_acks = True

    def drain_events(self, connection: Any, **kwargs: Any) -> None:
        _flush_acks(connection)
        waker = self.waker
        transport = getattr(connection, "transport", None)
        sock = getattr(transport, "sock", None)
        # Without a socket, py-amqp raises the right connection error itself.
        if waker is not None and sock is not None and not _buffered(transport):
            timeout = kwargs.get("timeout")
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            poller.register(waker.fd, select.POLLIN)
            for fd in self.watched:
                poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
            if waker.fd in ready:
                waker.woken()
            if sock.fileno() not in ready:
                raise TimeoutError()
        _drain(connection, kwargs.get("timeout"))
        # py-amqp returns after one message; every frame already read off the socket is
        # handled in the same turn, so the consumer acts on them together (fuller batches
        # for the pool, fewer ack frames). One frame per read, so nothing waits on the
        # socket: a message whose later frames are still on their way is finished next turn.
        if isinstance(transport, BufferedTCPTransport):
            while transport.frame_buffered():
                connection.blocking_read(None)

    def close_connection(self, connection: Any) -> None:
        if self.waker is not None:
            self.waker.close()
        with contextlib.suppress(Exception):  # a connection that failed has no acks to send
            _flush_acks(connection)
        super().close_connection(connection)


def _drain(connection: Any, timeout: float | None) -> None:
    """py-amqp's ``drain_events``, with ``timeout`` for the whole wait, not each frame.

    py-amqp reads frames until one completes a message, each read with the full timeout:
    frames that complete nothing (the broker's heartbeats, every half interval) restart
    it. With a heartbeat of 2 s they came every second, the 1 s wait never ended, the
    worker sent no heartbeat of its own, and RabbitMQ closed its connection.
    """
    if timeout is None:
        connection.drain_events()
        return
    deadline = time.monotonic() + timeout
    while not connection.blocking_read(timeout):
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError()


def _flush_acks(connection: Any) -> None:
    for channel in list((getattr(connection, "channels", None) or {}).values()):
        if isinstance(channel, Channel) and channel.is_open:
            channel.flush_acks()


def _buffered(transport: Any) -> bool:
    # Bytes read off the socket (by us, py-amqp or TLS) but not parsed: select would not
    # see them, so read at once.
    if isinstance(transport, BufferedTCPTransport):
        return transport.buffered() > 0
    if getattr(transport, "_read_buffer", b""):
        return True
    pending = getattr(transport.sock, "pending", None)
    return bool(pending and pending())
