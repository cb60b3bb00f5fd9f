"""Parking on Redis: a far-future ETA message waits in a sorted set, not in a worker.

A worker that held an ETA task due in an hour would hold it unacked all that time, and
raise its prefetch for it. ``park`` moves it to ``taskq.parked``, scored by its due time,
and acks the original; every consuming taskq worker moves due entries back to their queue
(``move_due_parked``, from the lease renewer thread of ``redis.Channel``), exactly one of
them per entry.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.json import dumps, loads

from ..message import new_id
from .redis_take import TakingChannel

PARKED_KEY = "taskq.parked"
MOVE_BATCH = 100
# KEYS: the parked set. ARGV: most entries -> the entries due by the server's clock.
DUE_PARKED_SCRIPT = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
return redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[1])
"""


class ParkingChannel(TakingChannel):
    def park(self, message: Any, queue: str, due: float, headers: dict[str, Any]) -> None:
        """Keep a received message in the parked set until ``due`` (epoch seconds)."""
        payload = dict(message._raw)
        payload["headers"] = headers
        properties = dict(payload["properties"])
        properties["delivery_tag"] = new_id()
        properties["delivery_info"] = {
            k: v for k, v in properties.get("delivery_info", {}).items() if k != "redelivered"
        }
        payload["properties"] = properties
        entry = dumps({"queue": queue, "payload": payload, "id": properties["delivery_tag"]})
        self._sync_client().zadd(PARKED_KEY, {entry: due})

    def move_due_parked(self) -> int:
        moved = 0
        client = self._sync_client()
        # The server's clock: every worker agrees on "due". One round trip, not TIME then
        # ZRANGE: every consuming worker asks every second.
        due = client.eval(DUE_PARKED_SCRIPT, 1, self.global_keyprefix + PARKED_KEY, MOVE_BATCH)
        for entry in due or ():
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
