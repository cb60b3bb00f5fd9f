"""kombu's Redis transport with leases and parking, so a task is never run twice at once.

kombu emulates acks on Redis: a delivered message sits in an "unacked" hash with its
delivery time in an index, and any consumer puts back those older than the visibility
timeout. Alone, that redelivers a task that runs longer than the timeout, or an ETA task
held longer, while its first worker still has it. This subclass adds:

* leases: a thread renews the index time of every message this channel holds, so only
  the messages of a dead (or frozen) worker ever pass the timeout. They come back within
  ``visibility_timeout`` + ``unacked_sweep_interval`` seconds.
* a time-based sweep (kombu counts polls, which a busy consumer makes thousands of).
* parking: ``park`` moves a far-future ETA message to a sorted set scored by its due
  time; the renewer thread of every consumer moves due ones back to their queue.
* an atomic take (``redis_take``): messages are popped and recorded as unacked by one
  Lua script, a batch at a time, with the pending acks applied in the same call.

Everything else, wire format included, is kombu's, so Celery clients and workers share
the same keys.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import redis
from kombu.exceptions import VersionMismatch
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from .redis_take import TAKE_SCRIPT, UNREADABLE_KEY, Item, Source, parse_taken, take_args

logger = logging.getLogger("taskq.transport")

PARKED_KEY = "taskq.parked"
DEFAULT_VISIBILITY_TIMEOUT = 60.0
MOVE_BATCH = 100
MIN_SERVER = (6, 2)  # BLMOVE, RPOP with a count
SEVERAL_QUEUES_PEEK = 0.1  # an idle wait on one queue's list while others may fill


class QoS(kombu_redis.QoS):
    channel: Channel

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._next_sweep = 0.0

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.channel.unacked_sweep_interval
        super().restore_visible(start, num, interval=1)

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
        return self.channel.taking or bool(super().can_consume())

    def held_tags(self) -> list[str]:
        try:
            # One C-level copy: safe to take from the renewer thread under the GIL.
            return list(self._delivered)
        except RuntimeError:
            return []


class Channel(kombu_redis.Channel):
    QoS = QoS
    visibility_timeout = DEFAULT_VISIBILITY_TIMEOUT
    unacked_sweep_interval = 5.0
    # kombu holds a Redis lock while it sweeps; a worker killed mid-sweep leaves it held
    # until it expires, and no one restores anything meanwhile (kombu's default is 300 s).
    # A sweep takes milliseconds.
    unacked_mutex_expire = 10
    lease_renew_interval: float | None = None  # default: a quarter of the visibility timeout
    fetch_batch = 100  # most messages one take asks for (the prefetch credit bounds it too)
    peek_timeout: float | None = None  # idle wait per call; default below
    _cached_client: Any = None  # class default: kombu's __init__ already makes clients
    _plain: Any = None
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "unacked_sweep_interval",
        "lease_renew_interval",
        "fetch_batch",
        "peek_timeout",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._renewer: threading.Thread | None = None
        self._stop_renewer = threading.Event()
        renew = self.lease_renew_interval or self.visibility_timeout / 4
        if not 0 < renew < self.visibility_timeout:
            raise ValueError("need 0 < lease_renew_interval < visibility_timeout")
        self.renew_every = float(renew)
        if int(self.fetch_batch) < 1:
            raise ValueError("need fetch_batch >= 1")
        self.recorded: set[str] = set()
        self.pending_acks: list[str] = []
        self.taking = False  # a take's reply is outstanding on the consuming connection
        self._in_flight_acks: list[str] = []
        self._sources: list[Source] = []
        self._busy = False  # the last take found messages: take again rather than wait
        self._peek_key: str | None = None
        self._no_ack_queues: set[str] = set()
        self._server_checked = False

    # The renewer starts with the first consume or get, not per message: a consumer that
    # holds nothing still moves parked messages back when due, and a long `basic_get` scan
    # (`taskq dead`) keeps its messages from being restored under it.
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._check_server()
        self.ensure_renewer()
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._check_server()
        self.ensure_renewer()
        self.flush_acks()
        sources = self._sources_for([queue], no_ack_queues={queue} if no_ack else set())
        args = take_args(sources, 1, (), self.global_keyprefix, self._keys(), time.time())
        items = self._readable(self._evalsha(self._plain_client(), args), sources)
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

    # -- taking messages (see redis_take)
    def _keys(self) -> tuple[str, str]:
        return self.unacked_index_key, self.unacked_key

    def _sources_for(self, queues: list[str], no_ack_queues: set[str]) -> list[Source]:
        # Priority-major, like kombu's BRPOP: all queues' highest step before the next.
        return [
            Source(self._q_for_pri(queue, pri), queue, queue not in no_ack_queues)
            for pri in self.priority_steps
            for queue in queues
        ]

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._sources = self._sources_for(queues, self._no_ack_queues)
        connection = self.client.connection
        prefix = self.global_keyprefix
        if self._busy:
            acks, self.pending_acks = self.pending_acks, []
            self._in_flight_acks = acks
            want = self._credit()
            args: list[Any] = [
                "EVALSHA",
                *take_args(self._sources, want, acks, prefix, self._keys(), time.time()),
            ]
            self.taking = True
        else:
            self.flush_acks()  # before a wait of up to a second
            key = prefix + self._peek_source(queues).key
            wait = self.peek_timeout
            if wait is None:
                wait = self.brpop_timeout if len(queues) == 1 else SEVERAL_QUEUES_PEEK
            args = ["BLMOVE", key, key, "RIGHT", "RIGHT", timeout or wait]
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        connection.send_command(*args)

    def _credit(self) -> int:
        credit = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        batch = int(self.fetch_batch)
        return max(1, min(batch, batch if credit is None else credit))

    def _peek_source(self, queues: list[str]) -> Source:
        # Wait where the last message came from: a queue whose tasks all carry a
        # priority only ever fills a priority list, never the plain one.
        for source in self._sources:
            if source.key == self._peek_key:
                return source
        return self._sources_for(queues[:1], set())[0]

    def _brpop_read(self, **options: Any) -> bool:
        taking, self.taking = self.taking, False
        acks, self._in_flight_acks = self._in_flight_acks, []
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVALSHA" if taking else "BLMOVE", **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()
                self.pending_acks[:0] = acks  # ZREM/HDEL again is harmless
                raise
            except redis.exceptions.NoScriptError:
                self.pending_acks[:0] = acks  # the script never ran
                self._load_script(self._plain_client())
                raise kombu_redis.Empty() from None
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        if not taking:
            if reply is None or self._closing:
                # Timed out: the message may be on a list not waited on; look at all once.
                self._busy = reply is None
                raise kombu_redis.Empty()
            reply = self._evalsha(self._plain_client(), self._take_args_now())
        items = self._readable(reply, self._sources)
        self._busy = bool(items)
        if not items:
            raise kombu_redis.Empty()
        self._deliver_all(items)
        return True

    def _take_args_now(self) -> list[Any]:
        acks, self.pending_acks = self.pending_acks, []
        args = take_args(
            self._sources, self._credit(), acks, self.global_keyprefix, self._keys(), time.time()
        )
        self._in_flight_acks = acks
        return args

    def _evalsha(self, client: Any, args: list[Any]) -> Any:
        try:
            try:
                reply = client.execute_command("EVALSHA", *args)
            except redis.exceptions.NoScriptError:
                self._load_script(client)
                reply = client.execute_command("EVALSHA", *args)
        except BaseException:
            self.pending_acks[:0] = self._in_flight_acks
            raise
        finally:
            self._in_flight_acks = []
        return reply

    def _load_script(self, client: Any) -> None:
        client.script_load(TAKE_SCRIPT)

    def _readable(self, reply: Any, sources: list[Source]) -> list[tuple[Item, Any]]:
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
                readable.append((item, loads(item.raw)))
            except Exception as exc:
                self._set_aside(item, exc)
        return readable

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
        self._peek_key = last.key
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
            pipe.lpush(UNREADABLE_KEY, item.raw)
            pipe.zrem(self.unacked_index_key, item.tag).hdel(self.unacked_key, item.tag)
            pipe.execute()

    def flush_acks(self) -> None:
        tags, self.pending_acks = self.pending_acks, []
        if not tags:
            return
        try:
            with self._sync_client().pipeline() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags)
                pipe.execute()
        except BaseException:
            self.pending_acks[:0] = tags
            raise

    # -- leases
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
                self.move_due_parked()
            except Exception as exc:
                # The consumer notices a dead connection and reconnects; keep trying.
                logger.warning("Redis lease renewal failed: %r", exc)

    def renew_leases(self) -> int:
        tags = self.qos.held_tags()
        if not tags:
            return 0
        now = time.time()
        # XX: only refresh entries still there; an acked message must not come back.
        changed: int = self._sync_client().zadd(
            self.unacked_index_key, dict.fromkeys(tags, now), xx=True, ch=True
        )
        return changed

    # -- parking
    def park(self, message: Any, queue: str, due: float, headers: dict[str, Any]) -> None:
        """Keep a received message in the parked set until ``due`` (epoch seconds)."""
        payload = dict(message._raw)
        payload["headers"] = headers
        properties = dict(payload["properties"])
        properties["delivery_tag"] = str(uuid.uuid4())
        properties["delivery_info"] = {
            k: v for k, v in properties.get("delivery_info", {}).items() if k != "redelivered"
        }
        payload["properties"] = properties
        entry = dumps({"queue": queue, "payload": payload, "id": properties["delivery_tag"]})
        self._sync_client().zadd(PARKED_KEY, {entry: due})

    def move_due_parked(self) -> int:
        moved = 0
        due = self._sync_client().zrange(
            PARKED_KEY, "-inf", time.time(), byscore=True, offset=0, num=MOVE_BATCH
        )
        for entry in due:
            if self._move_one(entry):
                moved += 1
        return moved

    def _move_one(self, entry: bytes) -> bool:
        moved = False

        def move(pipe: Any) -> None:
            nonlocal moved
            moved = False  # redis-py calls this again when the WATCH fails
            # Every consumer runs this; WATCH makes exactly one of them move each entry.
            # (kombu's key-prefixing client does not know ZSCORE, hence the explicit key.)
            if pipe.execute_command("ZSCORE", self.global_keyprefix + PARKED_KEY, entry) is None:
                return
            record = loads(entry)
            payload = record["payload"]
            pri = self._get_message_priority(payload, reverse=False)
            pipe.multi()
            pipe.zrem(PARKED_KEY, entry)
            pipe.lpush(self._q_for_pri(record["queue"], pri), dumps(payload))
            moved = True

        self._sync_client().transaction(move, PARKED_KEY)
        return moved

    def _plain_client(self) -> Any:
        # Scripts get explicitly prefixed names: kombu's prefixing client would prefix
        # the wrong EVALSHA argument.
        client = self._plain
        if client is None or client.connection_pool is not self.pool:
            client = self._plain = redis.Redis(connection_pool=self.pool)
        return client

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
        self._stop_renewer.set()
        if not self.closed:
            try:
                self.flush_acks()  # else the sweep would run acked tasks again
            except Exception as exc:
                logger.warning("Could not send %d acks: %r", len(self.pending_acks), exc)
        super().close()


class Poller(kombu_redis.MultiChannelPoller):
    def on_poll_start(self) -> None:
        super().on_poll_start()
        # A channel that took messages just now carried its acks along; the others
        # (waiting, out of credit, or not consuming) send theirs before the poll.
        for channel in self._channels:
            if not channel.taking:
                channel.flush_acks()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cycle = Poller()
