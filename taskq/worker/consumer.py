"""Consumer: takes messages from the broker and feeds the pool, on one thread.

Threading contract. kombu connections, channels and messages are not thread-safe, so
exactly one thread, the one that calls ``Consumer.run``, touches them: it drains the
connection, acks and rejects, changes QoS and declares queues, and reads the prefork
pool's reports. Every other thread (billiard's supervisor and time-limit threads, pool
threads) may only call ``call_soon`` (or set the stop flags), which queues
a function for the consumer thread and, where the transport can be woken (Redis,
RabbitMQ), ends its wait for the broker. The loop runs those functions between broker
reads; on other transports it polls with a short timeout while tasks are in flight, so
that their completions are acted on promptly. Signal handlers run on this very thread and
only record (signal_inbox.py); ``watch`` lets the owner's chore act on them from the loop.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu import Queue
from kombu.common import QoS

from .. import signals
from ..backoff import Backoff, Incident
from ..exceptions import BrokerUnavailable
from ..message import JSON
from ..url import mask_url
from .batch import Runtimes
from .connection import (
    LinkSpec,
    SetUpRefused,
    Stopped,
    cancel_consumers,
    close_quietly,
    connection_errors,
    consume_from,
    open_link,
)
from .dispatch import dispatch
from .intake import receive
from .keeper import ResultKeeper
from .monitor import Monitor
from .pool import Pool
from .prefetch import AdaptivePrefetch, PrefetchRule
from .redelivery import Redelivery
from .request import Request
from .revokes import drop_revoked, is_revoked
from .shutdown import shut_down
from .state import WorkerState
from .strategy import build_strategies
from .timers import Timers

if TYPE_CHECKING:
    from ..app import Taskq
    from ..security import Verifier
    from .control import ControlPanel

logger = logging.getLogger(__name__)

BUSY_POLL = 0.005  # broker poll timeout while completions may arrive from the pool
IDLE_POLL = 1.0
REST_STEP = 0.05  # while resting between attempts, how often the pool and signals are read
RECONNECT_AFTER_FAULTS = 3


@dataclass(frozen=True)
class ConsumerOptions:
    queues: tuple[Queue, ...]
    prefetch_count: int
    hostname: str
    accept: frozenset[str] = frozenset({JSON})
    max_message_size: int | None = None
    verifier: Verifier | None = None  # app.setup_security(): signed messages are checked
    prefetch_seconds: float = 0.0  # see prefetch.py


class Consumer:
    def __init__(
        self,
        app: Taskq,
        pool: Pool,
        options: ConsumerOptions,
        state: WorkerState | None = None,
        monitor: Monitor | None = None,
    ):
        self.app = app
        self.pool = pool
        self.options = options
        self.state = state or WorkerState()
        self.monitor = monitor or Monitor(app, options.hostname, heartbeat=None)
        self.on_ready: Callable[[], None] = _nothing  # after the first connect
        self.monitor.load = lambda: (len(self.active), sum(self.state.total.values()))
        self.strategies = build_strategies(app, self, options.hostname)
        self.control: ControlPanel | None = None  # set by the worker: remote control
        self._revoked_seen = self.state.revoked.version
        self._bumped: set[int] = set()  # held keys that raised the prefetch count
        self.inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.ready: deque[Request] = deque()
        self.active: dict[int, Request] = {}
        self.batches_in_flight = 0
        self.runtimes = Runtimes()
        self.prefetch = AdaptivePrefetch(
            PrefetchRule(options.prefetch_count, pool.limit,
                         pool.capacity * pool.batch_size, options.prefetch_seconds)
        )  # fmt: skip
        self.timers = Timers()
        self.held: dict[int, Request] = {}
        self._seq = itertools.count()
        self.warm_stop = False
        self.cold_stop = False
        self.connection: Any = None
        self.qos: QoS | None = None
        self.fixed_prefetch = False  # quorum queues (delayed.py): ETA tasks park
        self.kombu_consumers: list[Any] = []
        self.queues: list[Queue] = list(options.queues)  # add_consumer, cancel_consumer
        self.redelivery = Redelivery(app, options.hostname)
        self.keeper = ResultKeeper(app.backend, self.call_soon)
        self.backoff = Backoff()
        self.lost = Incident(logger, "Connection to broker lost")
        self.refused = Incident(logger, "The broker refused this worker")
        self.faults = Incident(logger, "The transport failed to deliver messages")
        self._wake: Callable[[], None] | None = None  # set when the transport can be woken
        self._waiting = False  # in drain_events, to be woken by call_soon
        self._chores: list[Callable[[], None]] = []  # run at every turn (see watch)
        self._watched: list[int] = []

    def revoked_now(self, request: Request) -> bool:
        return is_revoked(self.state, request)

    def acknowledge_revokes(self) -> None:
        """The revoked ids as they are now are acted on (by the caller): no need to look."""
        self._revoked_seen = self.state.revoked.version

    def watch(self, fd: int, chore: Callable[[], None]) -> None:
        """Run ``chore`` on this thread at every turn of the loop, and wake when ``fd`` has input.

        For the owner's own events (its signal inbox): call before ``run``. ``chore`` must
        read what made ``fd`` readable, or the wait would end at once every time.
        """
        self._watched.append(fd)
        self._chores.append(chore)

    # -- called from other threads
    def call_soon(self, fn: Callable[[], None]) -> None:
        self.inbox.put(fn)
        wake = self._wake
        if wake is not None and self._waiting:  # a busy consumer finds it without help
            wake()

    def next_key(self) -> int:
        """A key for ``active`` or ``held``, never used before."""
        return next(self._seq)

    # -- called by the strategy, on this thread
    def reserve(self, request: Request) -> None:
        self.ready.append(request)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.call_later(delay, fn)

    def hold(
        self,
        delay: float,
        request: Request,
        then: Callable[[Request], None],
        raise_prefetch: bool = True,
    ) -> None:
        # A held message stays unacked, so it uses a prefetch slot: for ETA tasks raise the
        # count while they wait so they do not starve the pool (not for rate-limit waits,
        # whose whole point is to slow intake down; nor on quorum queues, where it cannot
        # grow: the strategy parks their ETA tasks instead).
        bump = raise_prefetch and self.qos is not None and not self.fixed_prefetch
        key = self.next_key()
        self.held[key] = request
        if bump:
            self.qos.increment_eventually()  # type: ignore[union-attr]
            self._bumped.add(key)

        def release() -> None:
            if self.unhold(key) is not None:
                then(request)

        self.call_later(delay, release)

    def unhold(self, key: int) -> Request | None:
        """Stop holding ``key`` (its timer then finds nothing to release)."""
        request = self.held.pop(key, None)
        if key in self._bumped:
            self._bumped.discard(key)
            if self.qos is not None:
                self.qos.decrement_eventually()
        return request

    # -- the loop
    def run(self) -> None:
        """Consume until a warm or cold stop; reconnect when the connection is lost."""
        # The pool is stopped however this ends, a broker that never answers included.
        try:
            self._connect_and_consume()
        finally:
            shut_down(self)

    def _connect_and_consume(self) -> None:
        first = True
        while not self._stopping():
            try:
                self._connect(first)
                first = False
                self._consume()
            except self._connection_errors() as exc:
                if self._stopping():
                    return
                if not self.app.conf.broker_connection_retry:
                    raise BrokerUnavailable(f"Lost the broker connection: {exc}") from exc
                self._forget_reserved()
                self.close_connection()
                delay = self.backoff.next_delay()
                incident = self.refused if isinstance(exc, SetUpRefused) else self.lost
                incident.failed(exc, f"Reconnecting in {delay:.1f} s", level=logging.WARNING)
                self._rest(delay)

    def _stopping(self) -> bool:
        return self.warm_stop or self.cold_stop

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        return connection_errors(self.connection)

    def _connect(self, first: bool) -> None:
        self.close_connection()
        fd = self.pool.result_fd
        spec = LinkSpec(
            tuple(self.queues),
            self.prefetch.rule.base + self.prefetch.extra,
            self.options.hostname,
            watch=(*(() if fd is None else (fd,)), *self._watched),
        )
        link = open_link(
            self.app, spec, self._on_message, self._on_decode_error,
            self._between_attempts, first, self._stopping,
        )  # fmt: skip
        # Nothing is held at connect time: reconnecting forgot what the old connection held.
        self.connection, self.qos, self._wake = link.connection, link.qos, link.wake
        self.fixed_prefetch = link.fixed_prefetch
        self.kombu_consumers = list(link.consumers)
        if self.control is not None:
            self.control.listen(self.connection)
        self.monitor.connect(self.connection, self.call_later)
        logger.info("Connected to %s; %s ready.", mask_url(self.app.broker_url), spec.hostname)
        if not first and self.monitor.metrics is not None:
            self.monitor.metrics.reconnected()
        if first:
            signals.worker_ready.send(sender=self)
            self.on_ready()

    def _between_attempts(self) -> None:
        # Tasks still running report meanwhile; the pool's time limits depend on it.
        self.pool.poll_results()
        self.run_chores()
        self._check_stop()

    def _check_stop(self) -> None:
        if self._stopping():
            raise Stopped("worker is stopping")

    def _rest(self, seconds: float) -> None:
        """Wait before trying the broker again, acting on the pool and signals meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            self.pool.poll_results()
            self.run_chores()
            self.run_inbox()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, REST_STEP))

    def _consume(self) -> None:
        conn = self.connection
        while not (self.warm_stop or self.cold_stop):
            self._tick()
            if self.warm_stop or self.cold_stop:
                return  # asked during the tick: no wait for the broker first
            # Announce the wait before looking at the inbox: a thread that queues work
            # after the look sees the flag and wakes us, one that queued before is seen.
            self._waiting = True
            if not self.inbox.empty():
                timeout = 0.0
            elif self.active and self._wake is None:
                timeout = BUSY_POLL
            else:
                timeout = self.monitor.wait_limit(self.timers.next_delay(IDLE_POLL))
            try:
                conn.drain_events(timeout=timeout)
            except TimeoutError:
                self._healthy()
            except self._connection_errors():
                raise
            except Exception as exc:
                self._waiting = False
                self._transport_failed(exc)
            else:
                self._healthy()
            finally:
                self._waiting = False
            if conn.heartbeat:
                conn.heartbeat_check()

    def _healthy(self) -> None:
        if self.lost.open or self.faults.open or self.refused.open:
            self.lost.resolve()
            self.faults.resolve()
            self.refused.resolve()
        self.backoff.reset()

    def _transport_failed(self, exc: Exception) -> None:
        # Something other than a lost connection: a server that refuses commands (out of
        # memory, disk full), or a transport in a state it cannot leave. Say so once, wait
        # longer each time, and after a few in a row start over on a new connection.
        self.faults.failed(exc)
        if self.faults.attempts >= RECONNECT_AFTER_FAULTS:
            raise ConnectionResetError(
                f"the transport failed {self.faults.attempts} times in a row: {exc!r}"
            ) from exc
        self._rest(self.backoff.next_delay())

    def _tick(self) -> None:
        self.run_chores()
        self.pool.poll_results()
        self.run_inbox()
        self.timers.run_due()
        if self.state.revoked.version != self._revoked_seen:
            self._revoked_seen = self.state.revoked.version
            drop_revoked(self)
        dispatch(self)
        self.state.save_now_and_then()
        if self.qos is not None:
            self.qos.update()
        self.monitor.flush()

    def run_chores(self) -> None:
        for chore in self._chores:
            chore()

    def run_inbox(self) -> None:
        while True:
            try:
                fn = self.inbox.get_nowait()
            except queue.Empty:
                return
            fn()

    # -- receiving (intake.py)
    def _on_message(self, raw: Any, queue: Queue) -> None:
        receive(self, raw, queue)

    def _on_decode_error(self, raw: Any, exc: BaseException, queue: Queue) -> None:
        self._on_message(raw, queue)  # raw.errors is set: it is buried as malformed

    # -- losing the connection, stopping
    def _forget_reserved(self) -> None:
        # Unacked messages of a dead connection come back from the broker; the copies in
        # memory can no longer be acked, so drop them and let running ones finish unacked.
        self.ready.clear()
        self.held.clear()
        self._bumped.clear()
        self.timers.clear()
        for request in self.active.values():
            request.stale = True
        self.keeper.mark_stale()

    # -- the queues consumed (remote control changes them)
    def consume_queue(self, source: Queue) -> bool:
        """Consume ``source`` from now on, after reconnects too; False if it already is."""
        if any(q.name == source.name for q in self.queues):
            return False
        self.queues.append(source)
        if self.connection is not None:
            channel = self.connection.default_channel
            started = consume_from(channel, source, self._on_message, self._on_decode_error)
            self.kombu_consumers.append(started)
        logger.info("Started consuming from %s", source.name)
        return True

    def cancel_queue(self, name: str) -> bool:
        """Stop consuming the queue ``name`` (what was reserved from it still runs)."""
        if not any(q.name == name for q in self.queues):
            return False
        self.queues = [q for q in self.queues if q.name != name]
        for consumer in [c for c in self.kombu_consumers if c.queues[0].name == name]:
            cancel_consumers([consumer])
            self.kombu_consumers.remove(consumer)
        logger.info("Stopped consuming from %s", name)
        return True

    def close_connection(self) -> None:
        close_quietly(self.connection)
        self.connection = None
        self.kombu_consumers = []


def _nothing() -> None:
    pass
