"""Batch: reserved requests handed to the pool together, and how each one is settled.

The consumer hands tasks to the pool in batches so that billiard's cost per hand-off is
paid once for many short tasks. A batch never changes what happens to one task: each
member is acked, retried or dead-lettered on its own outcome, and when the process running
a batch dies, the marks it left say which member it was running (that one alone is
charged with the death), which ones finished, and which never started (those run again
here, at no cost to their delivery count).
"""

from __future__ import annotations

import logging
from collections import deque

from ..exceptions import WorkerLostError
from .pool import FINISHED, QUEUED, RUNNING, Crash, Fate, Lost, Withdrawn
from .prefetch import moving_average
from .request import Request
from .tracer import Outcome

logger = logging.getLogger(__name__)

# The most estimated work one batch holds. A hand-off costs the worker a few hundred
# microseconds, so batching pays for tasks of a millisecond or less; a longer task gains
# nothing from company and would only make its batch-mates wait behind it.
BATCH_SECONDS = 0.005
# A big message costs the worker more to read and to pickle to the child than its task
# may take to run: such a message goes alone, however short its task.
BATCH_BYTES = 64 * 1024
SMOOTHING = 0.3  # weight of the newest run in a task's average


class Runtimes:
    """The average run time of each task name, from the outcomes seen so far."""

    def __init__(self) -> None:
        self._average: dict[str, float] = {}

    def observe(self, name: str, seconds: float) -> None:
        self._average[name] = moving_average(self._average.get(name), seconds, SMOOTHING)

    def get(self, name: str) -> float | None:
        return self._average.get(name)


def batch_size(waiting: int, free: int, most: int) -> int:
    """Spread what waits over the free hand-offs: full batches only when there is a backlog.

    A lone task goes alone, so latency does not wait for a batch to fill, and a short
    backlog is spread over all pool processes rather than queued behind one of them.
    """
    return max(1, min(most, -(-waiting // max(1, free))))


def gather(ready: deque[Request], size: int, runtimes: Runtimes) -> list[Request]:
    """Take up to ``size`` requests from the front of ``ready`` that may run together.

    Expired requests are revoked on the way. Members are small messages of tasks known
    to be short, up to ``BATCH_SECONDS`` of estimated work. Any other request (never seen
    yet, long, big, with a time limit or an ack before it starts) ends the batch, or is
    the whole of it.
    """
    batch: list[Request] = []
    budget = BATCH_SECONDS
    while ready and len(batch) < size:
        request = ready[0]
        if request.expired():
            ready.popleft()
            request.revoke("expired")
            continue
        small = len(request.raw.body or b"") <= BATCH_BYTES
        cost = runtimes.get(request.name) if small and request.may_share_batch() else None
        if cost is None or cost > BATCH_SECONDS:  # runs alone
            if not batch:
                batch.append(ready.popleft())
            break
        if cost > budget:
            break
        batch.append(ready.popleft())
        budget -= cost
    return batch


def settle(request: Request, fate: Fate, error: BaseException | None) -> bool:
    """Act on one member's fate; True when it never started and should run again here."""
    if isinstance(fate, Outcome):
        request.on_outcome(fate)
    elif isinstance(fate, Withdrawn):
        request.give_back()  # a warm stop: it never started, it goes back as it came
    elif isinstance(fate, Crash):
        request.on_error(fate.error)
    elif error is None:  # a pool reports Lost fates only with the error that lost them
        request.on_error(RuntimeError(f"no report for {request!r}"))
    else:
        return _settle_lost(request, fate, error)
    return False


def _settle_lost(request: Request, fate: Lost, error: BaseException) -> bool:
    if fate.mark == QUEUED:
        if request.stale:
            return False  # its connection is gone: the broker delivers it again
        if isinstance(error, WorkerLostError) and not request.interrupted:
            logger.info("Task %r had not started when its process exited: runs again", request)
            return True
        request.on_error(error)
    elif fate.mark == RUNNING:
        request.on_error(error)  # the one running when the process died
    elif fate.state is not None:
        request.on_outcome(
            Outcome(fate.state, detail="finished; its process exited before reporting more")
        )
    elif fate.mark == FINISHED and request.policy.acks_late:
        # Rejected or buried: the reason was lost with the process. Run it again rather
        # than guess; its delivery count bounds how often.
        request.count_failed_delivery("it finished, but its process exited before saying how")
    else:
        request.ack()
    return False
