"""Dispatch: the consumer's hand-off of reserved tasks to the pool, and what comes back.

Runs on the consumer thread (consumer.py's threading contract). Reserved requests go to
the pool in batches sized by batch.py; the pool reports each batch's fates through
``call_soon``, and ``finish`` settles every member: acked, failed, revoked, or put back at
the front of the line when it never started.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .batch import batch_size, gather, settle
from .pool import BatchCallbacks, Fate, Withdrawn
from .request import Request
from .revokes import is_revoked
from .tracer import Outcome

if TYPE_CHECKING:
    from .consumer import Consumer

logger = logging.getLogger(__name__)


def dispatch(consumer: Consumer) -> None:
    # Up to two batches per pool process (one running, one waiting) keep the children
    # busy while this thread is between polls, without handing the pool everything.
    pool = consumer.pool
    while consumer.ready and consumer.batches_in_flight < pool.capacity:
        free = pool.capacity - consumer.batches_in_flight
        size = batch_size(len(consumer.ready), free, pool.batch_size)
        batch = gather(consumer.ready, size, consumer.runtimes)
        if batch:
            execute(consumer, batch)


def execute(consumer: Consumer, batch: list[Request]) -> None:
    keys = [consumer.next_key() for _ in batch]
    consumer.active.update(zip(keys, batch, strict=True))
    consumer.batches_in_flight += 1
    first = batch[0]  # a task with limits or an early ack is always alone
    limits = first.time_limits() if len(batch) == 1 else (None, None)
    monitor = consumer.monitor
    log_starts = logger.isEnabledFor(logging.INFO)

    def done(fates: list[Fate], error: BaseException | None) -> None:
        consumer.call_soon(lambda: finish(consumer, keys, fates, error))

    def started(pid: int) -> None:
        for request in batch:
            request.worker_pid = pid  # a plain write, read for inspect and terminate
            monitor.started(request.id, request.name)
            if log_starts:
                logger.info("Task %r started", request)

    now = time.time()
    for request in batch:
        request.time_start = now
    early = None if first.policy.acks_late else (lambda: consumer.call_soon(first.on_accepted))
    consumer.pool.apply([r.job() for r in batch], BatchCallbacks(done, early, started), limits)


def finish(
    consumer: Consumer, keys: list[int], fates: list[Fate], error: BaseException | None
) -> None:
    consumer.batches_in_flight -= 1
    again = []
    deeper = consumer.prefetch.extra
    for key, fate in zip(keys, fates, strict=True):
        request = consumer.active.pop(key, None)
        if request is None:
            continue  # given back already (cold stop)
        if isinstance(fate, Withdrawn) and is_revoked(consumer.state, request):
            request.revoke("revoked")  # taken back from the pool before it started
            continue
        if isinstance(fate, Outcome):
            consumer.state.total[request.name] += 1
            consumer.runtimes.observe(request.name, fate.runtime)
            consumer.prefetch.observe(fate.runtime, len(request.raw.body or b""))
        if settle(request, fate, error):
            again.append(request)
    consumer.ready.extendleft(reversed(again))
    if consumer.qos is not None:
        consumer.prefetch.apply(consumer.qos, deeper)
