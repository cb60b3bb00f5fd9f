"""kombu's Redis transport with leases and parking, so a task is never run twice at once.

kombu emulates acks on Redis: a delivered message sits in an "unacked" hash with its
delivery time in an index, and any consumer puts back those older than the visibility
timeout. Alone, that redelivers a task that runs longer than the timeout, or an ETA task
held longer, while its first worker still has it. This subclass adds:

* leases: a thread renews the index time of every message this channel holds, so only
  the messages of a dead (or frozen) worker ever pass the timeout. They come back within
  ``visibility_timeout`` + ``unacked_sweep_interval`` + ``peek_timeout`` seconds.
* a time-based sweep (kombu counts polls, which a busy consumer makes thousands of).
* landing lists: an idle consumer's wait moves a message into a list of its own, so one
  message wakes one consumer; the renewer keeps a lease on each such list, and the sweep
  puts a dead consumer's landed messages back on their queue (``redis_landing``).
* parking: ``park`` moves a far-future ETA message to a sorted set scored by its due
  time; the renewer thread of every consumer moves due ones back to their queue.
* an atomic take and batched acks (``redis_take``, the base of this channel).
* a wake-up pipe, so the worker's other threads can end its wait for the broker.

Everything else, wire format included, is kombu's, so Celery clients and workers share
the same keys.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.eventio import READ
from kombu.utils.json import dumps

from ..exceptions import BrokerUnavailable
from ..message import new_id
from ..redis_direct import call
from .redis_landing import LandingChannel
from .redis_script import (
    DUE_SCRIPT,
    HELD_KEY,
    LANDINGS_KEY,
    RENEW_SCRIPT,
    Source,
)
from .redis_take import TakingQoS
from .wakeup import Waker

logger = logging.getLogger(__name__)

DEFAULT_VISIBILITY_TIMEOUT = 60.0
CELERY_VISIBILITY_TIMEOUT = 3600.0  # Celery's default for Redis
RESTORE_BATCH = 100  # tags restored per sweep at most
# Up while a sweep has run lately: one sweep per interval serves every worker that would
# sweep the same way (``sweep_gate``).
SWEEP_GATE_KEY = "taskq.sweep.gate"


class QoS(TakingQoS):
    channel: Channel

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._next_sweep = 0.0

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """Put back what was held too long: taskq's past its lease, others' past theirs."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.channel.unacked_sweep_interval
        channel = self.channel
        prefix = channel.global_keyprefix  # kombu's client prefixes keys, but not EVAL's
        with channel.conn_or_acquire() as client:
            try:
                # Another taskq worker swept within this interval: skip, at the cost of
                # one command rather than the sweep's three round trips (docs/scaling.md).
                gate = max(1, int(channel.unacked_sweep_interval * 900))  # ms, 0.9 interval
                if not client.set(channel.sweep_gate, 1, nx=True, px=gate):
                    return
                # kombu's lock, so taskq and Celery workers never sweep at the same time.
                mutex = kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire)
                with mutex:
                    keys = (self.unacked_index_key, HELD_KEY, LANDINGS_KEY)
                    moved, *due = client.eval(
                        DUE_SCRIPT, 3, *(prefix + key for key in keys),
                        channel.visibility_timeout, channel.others_hold_for, RESTORE_BATCH,
                    )  # fmt: skip
                    if moved:
                        logger.warning(
                            "Put back %d message(s) that a consumer which stopped renewing "
                            "its lease had moved to its landing list.", moved,
                        )  # fmt: skip
                    for tag in due:
                        self.restore_by_tag(tag, client)
                    if len(due) >= RESTORE_BATCH:
                        client.delete(channel.sweep_gate)  # more to restore: sweep on
            except kombu_redis.MutexHeld:
                pass
            except redis.ResponseError as exc:
                # Refused (out of memory: even the sweep's lock is a write). Consuming goes
                # on; the next sweep tries again.
                logger.debug("Redis unacked sweep refused: %r", exc)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # Every way out of the unacked hash leaves the held set too.
        return super()._remove_from_indices(delivery_tag, pipe).srem(HELD_KEY, delivery_tag)

    def held_tags(self) -> list[str]:
        try:
            # One C-level copy: safe to take from the renewer thread under the GIL.
            return list(self._delivered)
        except RuntimeError:
            return []


class Channel(LandingChannel):
    QoS = QoS
    visibility_timeout = DEFAULT_VISIBILITY_TIMEOUT
    unacked_sweep_interval = 5.0
    # kombu holds a Redis lock while it sweeps; a worker killed mid-sweep leaves it held
    # until it expires, and no one restores anything meanwhile (kombu's default is 300 s).
    # A sweep takes milliseconds.
    unacked_mutex_expire = 10
    lease_renew_interval: float | None = None  # default: a quarter of the visibility timeout
    # How long a message held by a consumer that renews no lease (a Celery worker) may
    # stay unacked before a taskq worker restores it: never sooner than Celery would
    # (its visibility_timeout, 3600 s by default).
    celery_visibility_timeout: float | None = None
    # A publish returns only once this many replicas have the message (Redis WAIT), or
    # raises BrokerUnavailable after min_replicas_timeout seconds: see docs/reliability.md.
    min_replicas = 0
    min_replicas_timeout = 1.0
    from_transport_options = (
        *LandingChannel.from_transport_options,
        "unacked_sweep_interval",
        "lease_renew_interval",
        "celery_visibility_timeout",
        "min_replicas",
        "min_replicas_timeout",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._renewer: threading.Thread | None = None
        self._stop_renewer = threading.Event()
        renew = self.lease_renew_interval or self.visibility_timeout / 4
        if not 0 < renew < self.visibility_timeout:
            raise ValueError("need 0 < lease_renew_interval < visibility_timeout")
        self.renew_every = float(renew)
        others = self.celery_visibility_timeout
        self.others_hold_for = float(
            max(CELERY_VISIBILITY_TIMEOUT, self.visibility_timeout) if others is None else others
        )
        if self.others_hold_for < self.visibility_timeout:
            raise ValueError("need celery_visibility_timeout >= visibility_timeout")

    # The renewer starts with the first consume or get, not per message: a consumer that
    # holds nothing still moves parked messages back when due, and a long `basic_get` scan
    # (`taskq dead`) keeps its messages from being restored under it.
    # Not for a broadcast queue read without acks (remote control's, events'): it holds no
    # message to renew, and the channel that consumes tasks moves the parked ones. One
    # thread less per worker, and two Redis commands a second less (docs/scaling.md).
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        if not (no_ack and queue in self._fanout_queues):
            self.ensure_renewer()
        return super().basic_consume(queue, *args, **kwargs)

    def basic_get(self, *args: Any, **kwargs: Any) -> Any:
        self.ensure_renewer()
        return super().basic_get(*args, **kwargs)

    # -- leases
    def landing(self, source: Source) -> Source | None:
        # A landing list's lease must be renewed from its first use (redis_landing).
        self.ensure_renewer()
        return super().landing(source)

    def ensure_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._stop_renewer.clear()
            self._renewer = threading.Thread(
                target=self._renew_loop, name="taskq-redis-leases", daemon=True
            )
            self._renewer.start()

    def _renew_loop(self) -> None:
        # Also wakes up often enough to move parked messages on time.
        tick = min(self.renew_every, 1.0)
        last_renew = time.monotonic()
        while not self._stop_renewer.wait(tick):
            try:
                if time.monotonic() - last_renew >= self.renew_every:
                    last_renew = time.monotonic()
                    self.renew_leases()
                    self.renew_landings()
                self.move_due_parked()
            except Exception as exc:
                # The consumer notices a dead connection and reconnects; keep trying.
                logger.warning("Redis lease renewal failed: %r", exc)

    def renew_leases(self) -> int:
        tags = self.qos.held_tags()
        if not tags:
            return 0
        # The server's time, not this host's: a skewed or jumped clock here cannot make
        # these leases look older, or anyone else's newer, than they are.
        key = self.global_keyprefix + self.unacked_index_key
        changed: int = self._sync_client().eval(RENEW_SCRIPT, 1, key, *tags)
        return changed

    # -- publishing
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if kwargs.get("_publish_batch") is not None or (self._expires and queue in self._expires):
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        key = self.global_keyprefix + key  # kombu's client would add it; the connection does not
        payload = dumps(message)
        # Straight on the client's one connection: redis-py's command layer (its lock, retry
        # wrapper and reply callbacks) was a sixth of a delay()'s time. The connection still
        # connects, checks its health, and drops itself on an error, which the publisher
        # then retries the long way; the lock keeps threads that share a channel apart.
        client, lock, wait = self._direct()
        with lock:
            if not self.min_replicas:
                call(client.connection, "LPUSH", key, payload, wait=wait)
                return
            # Both commands in one write; WAIT answers once enough replicas acknowledged
            # everything this connection wrote, or at the timeout with how many did.
            connection = client.connection
            wait_ms = max(1, int(float(self.min_replicas_timeout) * 1000))
            commands = [("LPUSH", key, payload), ("WAIT", int(self.min_replicas), wait_ms)]
            connection.send_packed_command(connection.pack_commands(commands))
            connection.read_response()
            replicas = int(connection.read_response())
        if replicas < int(self.min_replicas):
            raise BrokerUnavailable(
                f"Only {replicas} of the {self.min_replicas} replicas asked for "
                f"(min_replicas) had the message after {self.min_replicas_timeout} s; it is "
                "on the master and may run, but a failover now could lose it."
            )

    @property
    def sweep_gate(self) -> str:
        """The gate of the sweeps that restore what this one would: a worker whose leases
        are shorter must not be kept from sweeping by one whose leases are longer (its
        sweep would leave a dead worker's messages where they are)."""
        return f"{SWEEP_GATE_KEY}.{self.visibility_timeout:g}.{self.others_hold_for:g}"

    def _next_delivery_tag(self) -> str:
        return new_id()

    def close(self) -> None:
        self._stop_renewer.set()
        super().close()


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, plus acks sent before each poll and an optional wake-up pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.waker: Waker | None = None
        self.watched: tuple[int, ...] = ()  # more files whose input ends the wait
        self.fired = False  # one of them was readable in the last poll
        self._registered: tuple[Any, tuple[int, ...]] | None = None  # (poll object, fds)

    def on_poll_start(self) -> None:
        if self.waker is not None:
            watched = (self.poller, (self.waker.fd, *self.watched))
            if self._registered != watched:
                self._unregister_watched()
                for fd in watched[1]:
                    self.poller.register(fd, READ)
                self._registered = watched
        super().on_poll_start()
        # A channel that took messages just now carried its acks along; the others
        # (waiting, out of credit, or not consuming) send theirs before the poll.
        for channel in self._channels:
            channel.stand_down()
            if not channel.taking:
                channel.flush_acks()

    def handle_event(self, fileno: int, event: int) -> Any:
        if fileno in self.watched:
            self.fired = True
            return None
        return super().handle_event(fileno, event)

    # Not ``_unregister``: kombu's poller has a method of that name, with arguments of its
    # own, which it calls when it registers a reconnected client again.
    def _unregister_watched(self) -> None:
        if self._registered is not None:
            poller, fds = self._registered
            for fd in fds:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    poller.unregister(fd)
            self._registered = None

    def close(self) -> None:
        super().close()
        self._unregister_watched()
        if self.waker is not None:
            self.waker.close()  # reopened on the next poll if kombu reuses the transport


class Transport(kombu_redis.Transport):
    Channel = Channel
    cycle: Poller

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cycle = Poller()

    def enable_wakeup(self, watch: Sequence[int] = ()) -> Callable[[], None]:
        """A thread-safe function that makes a waiting ``drain_events`` return at once.

        Input on any of the ``watch`` files also ends the wait.
        """
        if self.cycle.waker is None:
            self.cycle.waker = Waker()
        self.cycle.watched = tuple(watch)
        return self.cycle.waker.wake

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        waker = self.cycle.waker
        if waker is None:
            super().drain_events(connection, timeout)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self.cycle.get(self._deliver, timeout=left)
                return
            except kombu_redis.Empty:
                fired, self.cycle.fired = self.cycle.fired, False
                if waker.woken() or fired:
                    raise TimeoutError() from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError() from None
