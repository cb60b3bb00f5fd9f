"""kombu's Redis channel with an atomic take: messages never exist only in memory.

kombu pops a message with BRPOP and records it as unacked in a second round trip; a
worker that dies between the two loses the message, because it is then only in that
worker's memory. Here one Lua script (``redis_script``) does both inside Redis: a message
is always either in its queue or in the unacked hash. The same call applies the acks
collected since the last one and takes up to a batch of messages, bounded by the prefetch
credit, so a busy worker makes one round trip per batch instead of three per message.

A script cannot block, so an idle consumer waits with ``BLMOVE``. Where the channel
gives it a landing list of its own (``landing``), the wait moves the message there:
Redis hands each message to exactly one of the consumers waiting on a queue, where a wait
that leaves the message in place (``BLMOVE key key``) wakes all of them for every message
(docs/scaling.md). The take is pipelined behind the wait and takes the landing list first,
so Redis runs it the moment the wait returns; a landing list left full by a take that
failed is taken by the next, and one left by a consumer that died goes back to its queue
(``redis.Channel``, which keeps the landing lists' leases).
The unacked record has kombu's layout, so kombu's sweep restores what a dead worker held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import redis
from kombu.exceptions import VersionMismatch
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from ..message import json_loads
from ..redis_direct import DEFAULT_SPIN, ReplyWait, call, run_script
from .compressed import HeldVirtualMessage
from .redis_script import (
    TAKE_SCRIPT,
    TAKE_SHA,
    UNREADABLE_KEY,
    Item,
    Source,
    parse_taken,
    take_args,
)

logger = logging.getLogger(__name__)

MIN_SERVER = (6, 2)  # BLMOVE, RPOP with a count
SEVERAL_QUEUES_PEEK = 0.1  # an idle wait on one queue's list while others may fill


class TakingQoS(kombu_redis.QoS):
    channel: TakingChannel

    # Messages taken by the script are already recorded in Redis: keep kombu's in-memory
    # bookkeeping only. Anything else (fanout deliveries) is recorded the kombu way.
    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.channel.recorded:
            self.channel.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    # Acks wait for the next take (or the flush before the next poll) to reach Redis in
    # the same round trip; an ack lost with the connection only means a redelivery.
    def ack(self, delivery_tag: str) -> None:
        self.channel.pending_acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            super().reject(delivery_tag, requeue=True)
        else:
            self.ack(delivery_tag)

    def can_consume(self) -> bool:
        # The reply to a take holds messages already recorded as ours: always read it,
        # even if the prefetch count went down meanwhile, or no one renews their leases.
        channel = self.channel
        return channel.taking or channel.waiting or bool(super().can_consume())


class TakingChannel(kombu_redis.Channel):
    QoS = TakingQoS
    Message = HeldVirtualMessage  # a compressed body stays so until the worker reads it
    fetch_batch = 100  # most messages one take asks for (the prefetch credit bounds it too)
    peek_timeout: float | None = None  # idle wait per call; default below
    _cached_client: Any = None  # class default: kombu's __init__ already makes clients
    # (pid, client, lock, the wait for its replies)
    _direct_client: tuple[int, Any, threading.Lock, ReplyWait] | None = None
    reply_spin = DEFAULT_SPIN  # seconds a publish polls for its reply before it sleeps
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "fetch_batch",
        "peek_timeout",
        "reply_spin",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if int(self.fetch_batch) < 1:
            raise ValueError("need fetch_batch >= 1")
        try:
            spin = float(self.reply_spin)
        except (TypeError, ValueError):
            spin = -1.0
        if not spin >= 0:  # also refuses NaN
            raise ValueError("need reply_spin >= 0 (seconds; 0 turns the spin off)")
        self.reply_spin = spin
        self.recorded: set[str] = set()
        self.pending_acks: list[str] = []
        self.taking = False  # a take's reply is outstanding on the consuming connection
        self.waiting = False  # a wait is, with a take behind it
        self._in_flight_acks: list[str] = []
        self._sources: list[Source] = []  # the outstanding take's, landing lists first
        # Landing lists that may hold a message (a wait moved it there and no take has
        # emptied them yet), by key.
        self._landed: dict[str, Source] = {}
        self._busy = False  # the last take filled its ask: take again rather than wait
        self._asked = 0  # how many messages the outstanding take asks for
        self._peek_key: str | None = None
        self._no_ack_queues: set[str] = set()
        self._server_checked = False

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._check_server()
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._check_server()
        sources = self._sources_for([queue], no_ack_queues={queue} if no_ack else set())
        acks, args = self._take_args(sources, 1)
        _, items = self._readable(self._run_take(args, acks), sources)
        if not items:
            return None
        item, payload = items[0]
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.recorded.add(item.tag)
            self.qos.append(message, item.tag)
        return message

    def _check_server(self) -> None:
        if self._server_checked:
            return
        version = str(self._sync_client().info("server").get("redis_version", "0"))
        found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if found < MIN_SERVER:
            raise VersionMismatch(
                f"taskq's Redis transport needs Redis 6.2 or newer (it takes messages with "
                f"BLMOVE and RPOP with a count); this server is {version}. Upgrade Redis."
            )
        self._server_checked = True

    # -- taking messages
    def _sources_for(self, queues: list[str], no_ack_queues: set[str]) -> list[Source]:
        # Priority-major, like kombu's BRPOP: all queues' highest step before the next.
        return [
            Source(self._q_for_pri(queue, pri), queue, queue not in no_ack_queues)
            for pri in self.priority_steps
            for queue in queues
        ]

    def landing(self, source: Source) -> Source | None:
        """The list an idle wait on ``source`` moves a message to, or None: wait in place.

        Only a channel that keeps the list's lease (so that a dead consumer's landed
        message goes back to its queue) may give one.
        """
        return None

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        sources = self._sources_for(queues, self._no_ack_queues)
        connection = self.client.connection
        self._asked = self._credit()
        commands = []
        # Still-landed messages (the take behind their wait failed) are taken at once.
        if not (self._busy or self._landed):
            # Pending acks go out from Poller.on_poll_start, on another connection.
            commands.append(self._wait_command(sources, len(queues), timeout))
        # A take rides behind a wait: Redis runs it as soon as the wait returns, so a
        # message that arrives costs no second round trip (and its unacked time is the
        # server's when the take runs, not when it was sent). It takes the landing lists
        # first: a message there is already this consumer's.
        self._sources = [*self._landed.values(), *sources]
        self._in_flight_acks, take = self._take_args(self._sources, self._asked)
        commands.append(["EVALSHA", TAKE_SHA, *take])
        self.waiting = len(commands) == 2
        self.taking = not self.waiting
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        connection.send_packed_command(connection.pack_commands(commands))

    def _wait_command(self, sources: list[Source], queues: int, timeout: float | None) -> list[Any]:
        """The idle wait on the list a message is likeliest to come to, into this
        consumer's landing list for it if the channel gives one."""
        peek = self._peek_source(sources)
        wait = self.peek_timeout
        if wait is None:
            wait = self.brpop_timeout if queues == 1 else SEVERAL_QUEUES_PEEK
        key = self.global_keyprefix + peek.key
        landing = self.landing(peek)
        if landing is None:
            return ["BLMOVE", key, key, "RIGHT", "RIGHT", timeout or wait]  # left in place
        self._landed[landing.key] = landing
        into = self.global_keyprefix + landing.key
        return ["BLMOVE", key, into, "RIGHT", "LEFT", timeout or wait]

    def _credit(self) -> int:
        credit = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        batch = int(self.fetch_batch)
        return max(1, min(batch, batch if credit is None else credit))

    def _peek_source(self, sources: list[Source]) -> Source:
        # Wait where the last message came from: a queue whose tasks all carry a
        # priority only ever fills a priority list, never the plain one. Otherwise the
        # first queue's highest-priority list (in kombu's steps, the plain one).
        for source in sources:
            if source.key == self._peek_key:
                return source
        return sources[0]

    def _settle_landed(self, taken: int) -> None:
        # A take that got less than it asked for emptied every list it looked at, the
        # landing lists included; one that got all it asked for may have left some.
        if taken < self._asked:
            self._landed.clear()

    def _brpop_read(self, **options: Any) -> bool:
        taking, self.taking, self.waiting = self.taking, False, False
        acks, self._in_flight_acks = self._in_flight_acks, []
        wait_error: Exception | None = None
        try:
            try:
                connection = self.client.connection
                if not taking:
                    try:
                        self.client.parse_response(connection, "BLMOVE", **options)
                    except redis.exceptions.ResponseError as exc:
                        wait_error = exc  # the take's reply still follows: read it
                reply = self.client.parse_response(connection, "EVALSHA", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                self.pending_acks[:0] = acks  # ZREM/HDEL again is harmless
                raise
            except redis.exceptions.NoScriptError:
                self.pending_acks[:0] = acks  # the script never ran
                self._load_script()
                raise kombu_redis.Empty() from None
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        taken, items = self._readable(reply, self._sources)
        self._settle_landed(taken)
        # A take that got less than it asked for emptied every list it looked at (also
        # after a wait on just one of them): wait next, rather than spend a round trip on
        # a take that finds nothing.
        self._busy = taken >= self._asked
        if not items:
            if wait_error is not None:
                raise wait_error
            raise kombu_redis.Empty()
        self._deliver_all(items)
        return True

    def _take_args(self, sources: list[Source], want: int) -> tuple[list[str], list[Any]]:
        """The pending acks, no longer pending, and the EVALSHA arguments that carry them."""
        acks, self.pending_acks = self.pending_acks, []
        keys = (self.unacked_index_key, self.unacked_key)
        return acks, take_args(sources, want, acks, self.global_keyprefix, keys)

    def _run_take(self, args: list[Any], acks: list[str]) -> Any:
        """A take (or a take of nothing) on this channel's own connection, now.

        Script keys carry the prefix already: the connection adds none, where kombu's
        prefixing client would prefix the wrong argument. On an error the acks the take
        carried are pending again (removing them twice is harmless).
        """
        client, lock, _ = self._direct()
        try:
            with lock:
                return run_script(client.connection, TAKE_SCRIPT, TAKE_SHA, args)
        except BaseException:
            self.pending_acks[:0] = acks
            raise

    def _load_script(self) -> None:
        client, lock, _ = self._direct()
        with lock:
            call(client.connection, "SCRIPT", "LOAD", TAKE_SCRIPT)

    def _readable(self, reply: Any, sources: list[Source]) -> tuple[int, list[tuple[Item, Any]]]:
        """How many messages the take took, and those kombu can read, with their bodies."""
        taken = parse_taken(reply, sources)
        if taken.unreadable:
            logger.error(
                "Set aside %d entries of %s that are not kombu messages, in the Redis list "
                "%r (inspect with LRANGE; nothing was run).",
                taken.unreadable,
                sources[0].queue,
                self.global_keyprefix + UNREADABLE_KEY,
            )
        readable = []
        for item in taken.items:
            try:
                readable.append((item, json_loads(item.raw)))
            except Exception as exc:
                self._set_aside(item, exc)
        return len(taken.items), readable

    def _deliver_all(self, items: list[tuple[Item, Any]]) -> None:
        for item, _ in items:
            if item.source.record:
                self.recorded.add(item.tag)
        try:
            for item, payload in items:
                try:
                    self.connection._deliver(payload, item.source.queue)
                except self.connection_errors:
                    raise
                except Exception as exc:
                    if item.tag in self.qos._delivered or not item.source.record:
                        raise
                    self._set_aside(item, exc)
        finally:
            # Whatever was not handed over stays recorded in Redis: the sweep restores it.
            for item, _ in items:
                self.recorded.discard(item.tag)
        last = items[-1][0].source
        self._peek_key = last.wait_key
        self._queue_cycle.rotate(last.queue)

    def _set_aside(self, item: Item, exc: Exception) -> None:
        # kombu cannot make a message of it (bad body encoding...): keep it, unrun.
        self.recorded.discard(item.tag)
        logger.error(
            "Set aside message %s from %s: kombu cannot read it (%r); it is in the Redis list %r.",
            item.tag,
            item.source.queue,
            exc,
            self.global_keyprefix + UNREADABLE_KEY,
        )
        with self._sync_client().pipeline() as pipe:
            self.qos._remove_from_indices(item.tag, pipe).lpush(UNREADABLE_KEY, item.raw)
            pipe.execute()

    def flush_acks(self) -> None:
        tags, self.pending_acks = self.pending_acks, []
        if not tags:
            return
        # A take of nothing: the script's ZREM and HDEL, atomically, in one command (a
        # redis-py transaction cost a waiting worker a quarter of its time per task).
        keys = (self.unacked_index_key, self.unacked_key)
        self._run_take(take_args((), 0, tags, self.global_keyprefix, keys), tags)

    def _direct(self) -> tuple[Any, threading.Lock, ReplyWait]:
        """This process's client on one connection of its own, the lock to use it, and
        the wait for its replies.

        A pooled client takes a connection from the pool and checks it for unread data (a
        poll) on every command, a fifth of an LPUSH's time. The connection still connects,
        checks its health and drops itself on an error. The lock is made with the client,
        so a child forked mid-command never inherits it held.
        """
        pid = os.getpid()
        if self._direct_client is None or self._direct_client[0] != pid:
            # A forked child leaves its parent's connection alone and opens its own.
            options: dict[str, Any] = {
                "connection_pool": self.pool,
                "single_connection_client": True,
            }
            provider = self.pool.connection_kwargs.get("credential_provider")
            if provider is not None:
                options["credential_provider"] = provider
            wait = ReplyWait(self.reply_spin)
            self._direct_client = (pid, self.Client(**options), threading.Lock(), wait)
        return self._direct_client[1:]

    def _sync_client(self) -> Any:
        # Never ``self.client``: kombu pins that one to the connection it reads BRPOP
        # replies from, so a command from another thread (or mid-poll) would take them.
        return self._create_client(asynchronous=False)

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis-py client for every publish, ack and unacked write
        # (about a fifth of a publish's CPU time). A client on a connection pool is
        # thread-safe, so keep one per pool; a new pool (after a fork or a disconnect)
        # gets a new client.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._cached_client
        if cached is None or cached.connection_pool is not pool:
            cached = self._cached_client = super()._create_client(asynchronous=False)
        return cached

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush_acks()  # else the sweep would run acked tasks again
            except Exception as exc:
                logger.warning("Could not send %d acks: %r", len(self.pending_acks), exc)
        direct, self._direct_client = self._direct_client, None
        if direct is not None and direct[0] == os.getpid():
            with contextlib.suppress(Exception):
                direct[1].close()  # back to the pool, which kombu disconnects
        super().close()
