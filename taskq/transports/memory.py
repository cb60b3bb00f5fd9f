"""kombu's in-process transport (``memory://``), with each queue made once.

kombu's memory channel makes a queue on first use by checking its shared dict and then
setting the key. When a publisher's first message and a consumer's first poll (or
declaration) meet on a new queue, each can make a queue of its own, and the one set last
replaces the other, with the message in it: a test that starts a worker and sends at once
lost its task now and then (``tests/unit/test_memory_transport.py``). ``dict.setdefault``
lets exactly one queue win. The queues stay kombu's shared ones, so a kombu ``memory://``
connection in the same process sees the same broker.
"""

from __future__ import annotations

from queue import Queue
from typing import Any

from kombu.transport import memory


class Channel(memory.Channel):
    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_for(queue)

    def _queue_for(self, queue: str) -> Queue[Any]:
        found: Queue[Any] | None = self.queues.get(queue)
        if found is None:
            found = self.queues.setdefault(queue, Queue())  # one atomic step: one winner
        return found


class Transport(memory.Transport):
    Channel = Channel


__all__ = ["Channel", "Transport"]
