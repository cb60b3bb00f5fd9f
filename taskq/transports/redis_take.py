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
(docs/scaling.md). The take is pipelined behind the wait and takes the landing lists
first, so Redis runs it the moment the wait returns; a landing list left full by a take
that failed is taken by the next, and one left by a consumer that died goes back to its
queue (``redis.Channel``, which keeps the landing lists' leases). A consumer of several
queues waits on all of them through watchers (``redis_watch``) and on its bell.
The unacked record has kombu's layout, so kombu's sweep restores what a dead worker held.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from ..message import json_loads, new_id
from ..redis_direct import call, run_script
from .compressed import HeldVirtualMessage
from .redis_clients import ClientChannel
from .redis_script import (
    TAKE_SCRIPT,
    TAKE_SHA,
    UNREADABLE_KEY,
    Item,
    Source,
    parse_taken,
    take_args,
)
from .redis_watch import Watchers

logger = logging.getLogger(__name__)

# An idle wait on one queue's list while others may fill: only where there are no
# landing lists, hence no watchers.
SEVERAL_QUEUES_PEEK = 0.1


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


class TakingChannel(ClientChannel):
    QoS = TakingQoS
    Message = HeldVirtualMessage  # a compressed body stays so until the worker reads it
    fetch_batch = 100  # most messages one take asks for (the prefetch credit bounds it too)
    peek_timeout: float | None = None  # idle wait per call; default below
    from_transport_options = (
        *ClientChannel.from_transport_options,
        "fetch_batch",
        "peek_timeout",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if int(self.fetch_batch) < 1:
            raise ValueError("need fetch_batch >= 1")
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
        self._peek_keys: dict[str, str] = {}  # by queue: its list the last message came from
        self._no_ack_queues: set[str] = set()
        self._consumer_id = new_id()  # names this consumer's landing lists and bell
        self._watchers = Watchers(
            self._watcher_connection, self.global_keyprefix, f"taskq.bell.{self._consumer_id}"
        )
        self._wait_name = "BLMOVE"  # the outstanding wait's command

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

    def landings(self) -> list[Source]:
        """Every landing list this channel has given, which every take empties first."""
        return []

    def forget_landings(self, queues: frozenset[str], stopped: bool) -> None:
        """``queues`` are no longer consumed: their landing lists are done with (their
        watchers ``stopped`` for sure, or maybe still able to move a message)."""

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._watchers.harvest()
        self._follow(queues)
        sources = self._sources_for(queues, self._no_ack_queues)
        connection = self.client.connection
        self._asked = self._credit()
        commands = []
        # Still-landed messages (the take behind their wait failed) are taken at once.
        if not (self._busy or self._landed):
            # Pending acks go out from Poller.on_poll_start, on another connection.
            commands.append(self._wait_command(sources, queues, timeout))
        # A take rides behind a wait: Redis runs it as soon as the wait returns, so a
        # message that arrives costs no second round trip (and its unacked time is the
        # server's when the take runs, not when it was sent). It takes the landing lists
        # first: a message there is already this consumer's.
        landed = {s.key: s for s in (*self._landed.values(), *self.landings())}
        self._sources = [*landed.values(), *sources]
        self._in_flight_acks, take = self._take_args(self._sources, self._asked)
        commands.append(["EVALSHA", TAKE_SHA, *take])
        self.waiting = len(commands) == 2
        self.taking = not self.waiting
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        connection.send_packed_command(connection.pack_commands(commands))

    def _wait_command(
        self, sources: list[Source], queues: list[str], timeout: float | None
    ) -> list[Any]:
        """The idle wait: on the bell while watchers wait on each queue, else on the
        list a message is likeliest to come to, into this consumer's landing list for it
        if the channel gives one."""
        wait = self.peek_timeout
        if len(queues) > 1 and self._watch(queues, sources):
            self._wait_name = "BLPOP"
            return ["BLPOP", self._watchers.bell, timeout or wait or self.brpop_timeout]
        self._wait_name = "BLMOVE"
        if wait is None:
            wait = self.brpop_timeout if len(queues) == 1 else SEVERAL_QUEUES_PEEK
        peek = self._peek_source(sources, self._peek_key)
        key = self.global_keyprefix + peek.key
        landing = self.landing(peek)
        if landing is None:
            return ["BLMOVE", key, key, "RIGHT", "RIGHT", timeout or wait]  # left in place
        self._landed[landing.key] = landing
        into = self.global_keyprefix + landing.key
        return ["BLMOVE", key, into, "RIGHT", "LEFT", timeout or wait]

    def _watch(self, queues: list[str], sources: list[Source]) -> bool:
        """Have a watcher wait on each queue (where its last message came from) into its
        landing list; False if the channel gives no landing lists."""
        wanted = {}
        for queue in queues:
            own = [source for source in sources if source.queue == queue]
            source = self._peek_source(own, self._peek_keys.get(queue))
            landing = self.landing(source)
            if landing is None:
                return False
            wanted[queue] = (source, landing)
        if not self._watchers.arm(wanted):
            return False
        # If the take behind this wait fails, the next one goes without a wait first.
        self._landed.update((landing.key, landing) for _, landing in wanted.values())
        return True

    def _follow(self, queues: list[str]) -> None:
        """Stop the watchers of queues no longer consumed (all of them when one queue is
        left: its wait needs none) and let the channel end their landing lists."""
        keep = frozenset(queues) if len(queues) > 1 else frozenset()
        gone = self._watchers.queues - keep
        if gone:
            stopped = self._watchers.stop(gone, self._kill_client)
            self.forget_landings(gone - frozenset(queues), stopped)

    def stand_down(self) -> None:
        """Out of credit, with watchers waiting: stop them and give back what they landed,
        so that a worker with room takes it rather than this one once it has some."""
        if self.taking or self.waiting or not self._watchers.armed or self.qos.can_consume():
            return
        self._watchers.stand_down(self._unblock_clients, self._kill_client)
        self.give_back_landed(self._watchers.bell)

    def give_back_landed(self, bell: str) -> None:
        """Move every landing list's messages back to their queue, and silence ``bell``
        (the channel that keeps the lists does: ``redis.Channel``)."""

    def _credit(self) -> int:
        credit = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        batch = int(self.fetch_batch)
        return max(1, min(batch, batch if credit is None else credit))

    def _peek_source(self, sources: list[Source], key: str | None) -> Source:
        # Wait where the last message came from (``key``): a queue whose tasks all carry
        # a priority only ever fills a priority list, never the plain one. Otherwise the
        # first queue's highest-priority list (in kombu's steps, the plain one).
        for source in sources:
            if source.key == key:
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
                        self.client.parse_response(connection, self._wait_name, **options)
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
        for item, _ in items:
            self._peek_keys[item.source.queue] = item.source.wait_key
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

    def close(self) -> None:
        if not self.closed:
            self._watchers.close(self._kill_client)
            try:
                self.flush_acks()  # else the sweep would run acked tasks again
            except Exception as exc:
                logger.warning("Could not send %d acks: %r", len(self.pending_acks), exc)
        super().close()
