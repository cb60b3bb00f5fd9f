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

Everything else, wire format included, is kombu's, so Celery clients and workers share
the same keys.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads

logger = logging.getLogger("taskq.transport")

PARKED_KEY = "taskq.parked"
DEFAULT_VISIBILITY_TIMEOUT = 60.0
MOVE_BATCH = 100


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
    _cached_client: Any = None  # class default: kombu's __init__ already makes clients
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "unacked_sweep_interval",
        "lease_renew_interval",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._renewer: threading.Thread | None = None
        self._stop_renewer = threading.Event()
        renew = self.lease_renew_interval or self.visibility_timeout / 4
        if not 0 < renew < self.visibility_timeout:
            raise ValueError("need 0 < lease_renew_interval < visibility_timeout")
        self.renew_every = float(renew)

    # The renewer starts with the first consume or get, not per message: a consumer that
    # holds nothing still moves parked messages back when due, and a long `basic_get` scan
    # (`taskq dead`) keeps its messages from being restored under it.
    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        self.ensure_renewer()
        return super().basic_consume(*args, **kwargs)

    def basic_get(self, *args: Any, **kwargs: Any) -> Any:
        self.ensure_renewer()
        return super().basic_get(*args, **kwargs)

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
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel
