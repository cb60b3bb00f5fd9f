"""Prefetch that follows task length: a deeper window for short tasks only.

``worker_prefetch_multiplier`` bounds the messages a worker reserves by count. The right
count depends on how long tasks take: for long tasks a small window keeps work spread
across workers, while for tasks of a millisecond or less a window of a few messages per
process leaves the pool waiting on the broker between batches. So the worker watches how
long its tasks take and, when they are short, reserves beyond the multiplier up to
``worker_prefetch_seconds`` of estimated work per pool process. What another worker could
be missing is then bounded in time, not in count. Long tasks keep the multiplier alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SMOOTHING = 0.1  # weight of the newest run in the average
# Reserved messages beyond the multiplier hold at most this many bytes on average: big
# messages cost memory and decoding whatever their tasks take.
EXTRA_BYTES = 8 * 1024 * 1024


def moving_average(old: float | None, new: float, weight: float) -> float:
    """Exponentially weighted: ``new`` counts ``weight``, the history the rest."""
    return new if old is None else old + weight * (new - old)


@dataclass(frozen=True)
class PrefetchRule:
    base: int  # concurrency x multiplier
    processes: int
    ceiling: int  # the deepest window worth having: two full batches per process
    seconds: float  # estimated work to reserve per process; 0 turns this off


class AdaptivePrefetch:
    """Tracks the average task run time; says how many messages to reserve beyond ``base``."""

    def __init__(self, rule: PrefetchRule):
        self.rule = rule
        self.average: float | None = None
        self.size = 0.0  # average message body, bytes
        self.extra = 0

    def observe(self, runtime: float, size: int = 0) -> None:
        """Count one run (its seconds, its message's bytes); ``extra`` follows."""
        if runtime <= 0.0:
            return
        first = self.average is None
        self.average = moving_average(self.average, runtime, SMOOTHING)
        self.size = moving_average(None if first else self.size, size, SMOOTHING)
        self.extra = self._extra_for(self.average)

    def _extra_for(self, average: float) -> int:
        rule = self.rule
        if rule.seconds <= 0.0 or rule.ceiling <= rule.base:
            return 0
        wanted = rule.seconds / average * rule.processes
        if self.size > 0:
            wanted = min(wanted, rule.base + EXTRA_BYTES / self.size)
        if wanted <= rule.base:
            return 0
        # Whole powers of two: the window moves only when the average halves or doubles,
        # not with every wobble (on RabbitMQ each change is a basic.qos round trip).
        window = min(rule.ceiling, 1 << math.floor(math.log2(wanted)))
        return max(0, window - rule.base)

    def apply(self, qos: Any, before: int) -> None:
        """Move a kombu ``QoS`` by the change of ``extra`` since it was ``before``."""
        change = self.extra - before
        if change > 0:
            qos.increment_eventually(change)
        elif change < 0:
            qos.decrement_eventually(-change)
        else:
            return
        logger.debug(
            "Prefetch window %d -> %d: tasks take %.2f ms on average (worker_prefetch_seconds)",
            self.rule.base + before,
            self.rule.base + self.extra,
            (self.average or 0.0) * 1000,
        )
