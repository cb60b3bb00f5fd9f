"""Timers: functions due at a time, run by the consumer's loop between broker reads.

ETA and rate-limit holds, and anything else the consumer wants done later, go here. Only
the consumer thread touches them, so there is no lock; the loop asks how long it may wait
for the broker before the next one is due.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # equal times run in the order they were set

    def __len__(self) -> int:
        return len(self._heap)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))

    def run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, fn = heapq.heappop(self._heap)
            fn()

    def next_delay(self, longest: float) -> float:
        """Seconds until the next one is due, at most ``longest``."""
        if not self._heap:
            return longest
        return max(0.0, min(longest, self._heap[0][0] - time.monotonic()))

    def clear(self) -> None:
        self._heap.clear()
