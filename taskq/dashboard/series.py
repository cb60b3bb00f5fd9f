"""The chart's data: tasks finished and their runtimes over the last hour, in fixed memory.

Time is cut into slots of ``SLOT`` seconds held in a ring; each slot counts the tasks
that succeeded and failed in it and sorts their runtimes into log-spaced buckets, from
which the percentiles are read. A bucket spans a factor of ``10 ** (1 / 8)`` (about 1.33),
so a percentile is exact to within that factor's half, about 15 %: memory stays the same
whether a thousand tasks or a million finish in an hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SLOT = 10  # seconds
SPAN = 3600  # seconds of history
SLOTS = SPAN // SLOT
PER_DECADE = 8
LOWEST = 1e-4  # seconds: runtimes below count in the first bucket
BUCKETS = 8 * PER_DECADE + 1  # 100 µs to 10,000 s, and one above


@dataclass(frozen=True)
class Point:
    """One step of the chart."""

    t: int  # start of the step, epoch seconds
    succeeded: int
    failed: int
    p50: float | None
    p99: float | None


def _bucket(runtime: float) -> int:
    if runtime <= LOWEST:
        return 0
    return min(BUCKETS - 1, int(math.log10(runtime / LOWEST) * PER_DECADE) + 1)


def _middle(bucket: int) -> float:
    """The runtime a bucket stands for: the geometric middle of its bounds."""
    if bucket == 0:
        return LOWEST
    return float(LOWEST * 10 ** ((bucket - 0.5) / PER_DECADE))


class Series:
    """Counts and runtime buckets per slot; not thread-safe (the state's lock covers it)."""

    def __init__(self) -> None:
        self._start = [-1] * SLOTS  # the epoch slot number each ring entry holds
        self._succeeded = [0] * SLOTS
        self._failed = [0] * SLOTS
        self._runtimes: list[list[int] | None] = [None] * SLOTS

    def add(self, now: float, succeeded: bool, runtime: float | None) -> None:
        index = self._slot(int(now // SLOT))
        if succeeded:
            self._succeeded[index] += 1
        else:
            self._failed[index] += 1
        if runtime is not None and runtime >= 0:
            counts = self._runtimes[index]
            if counts is None:
                counts = self._runtimes[index] = [0] * BUCKETS
            counts[_bucket(runtime)] += 1

    def _slot(self, number: int) -> int:
        index = number % SLOTS
        if self._start[index] != number:  # an hour-old slot: start it afresh
            self._start[index] = number
            self._succeeded[index] = self._failed[index] = 0
            self._runtimes[index] = None
        return index

    def points(self, now: float, step: int = 60, span: int = SPAN) -> list[Point]:
        """One point per ``step`` seconds (a multiple of SLOT) over ``span``, oldest first."""
        step = max(SLOT, step - step % SLOT)
        per = step // SLOT
        last = int(now // step)
        first = last - max(1, span // step) + 1
        return [self._point(n * step, n * per, per) for n in range(first, last + 1)]

    def _point(self, t: int, first_slot: int, count: int) -> Point:
        succeeded = failed = 0
        runtimes = [0] * BUCKETS
        for number in range(first_slot, first_slot + count):
            index = number % SLOTS
            if self._start[index] != number:
                continue
            succeeded += self._succeeded[index]
            failed += self._failed[index]
            slot_runtimes = self._runtimes[index]
            if slot_runtimes is not None:
                runtimes = [a + b for a, b in zip(runtimes, slot_runtimes, strict=True)]
        return Point(t, succeeded, failed, percentile(runtimes, 0.50), percentile(runtimes, 0.99))


def percentile(counts: list[int], fraction: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = math.ceil(fraction * total)
    seen = 0
    for bucket, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return _middle(bucket)
    return _middle(len(counts) - 1)  # pragma: no cover - rank <= total


__all__ = ["Point", "Series", "percentile"]
