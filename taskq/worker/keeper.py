"""The result keeper: stores the states the consumer decides, on a thread of its own.

Some states are decided on the consumer thread, not where the task ran: FAILURE when its
process died or hit the hard time limit, REVOKED for an expired task, FAILURE for a dead
letter. The consumer thread must never wait for the result backend (every task's acks and
the broker's heartbeats wait behind it), and a state that cannot be stored must not be
acknowledged as if it were. So the consumer hands each such store to the keeper with what
to do once it is stored (``then``: usually ack) and what to do if it cannot be
(``give_up``: usually dead-letter, with the reason). The keeper tries each store until its
deadline, with backoff, and posts the verdict back to the consumer thread.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..backends import Backend, RetryPolicy
from ..backends.retry import ONE_ATTEMPT
from ..backoff import Backoff, Incident, describe
from ..exceptions import ResultNotStored

logger = logging.getLogger(__name__)


class Holder(Protocol):
    """What waits for a store: its message is not settled until the verdict."""

    stale: bool


class Keeper(Protocol):
    def keep(
        self,
        what: str,
        store: Callable[[], None],
        then: Callable[[], None],
        give_up: Callable[[str], None],
        holder: Holder | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Store:
    """One store, and what comes after it on the consumer thread."""

    what: str
    store: Callable[[], None]
    then: Callable[[], None]
    give_up: Callable[[str], None]
    holder: Holder | None
    deadline: float


class InlineKeeper:
    """Stores at once on the caller's thread, under the backend's own retry policy.

    For code that runs requests without a consumer loop (tools, tests); the worker's
    consumer uses ``ResultKeeper``.
    """

    def __init__(self, backend: Backend):
        self.backend = backend

    def keep(
        self,
        what: str,
        store: Callable[[], None],
        then: Callable[[], None],
        give_up: Callable[[str], None],
        holder: Holder | None = None,
    ) -> None:
        try:
            store()
        except Exception as exc:
            give_up(f"could not {what}: {describe(exc)}")
        else:
            then()


def budget(policy: RetryPolicy) -> float:
    """Seconds the policy would spend on one store's retries (None retries: a day)."""
    if not policy.enabled:
        return 0.0
    if policy.max_retries is None:
        return 86400.0
    total, sleep = 0.0, policy.base_sleep
    for _ in range(policy.max_retries):
        total += min(sleep, policy.max_sleep)
        sleep *= 2
    return total


class ResultKeeper:
    def __init__(self, backend: Backend, call_soon: Callable[[Callable[[], None]], None]):
        self.backend = backend
        self.call_soon = call_soon
        self.budget = budget(backend.retry)
        self._queue: queue.SimpleQueue[Store | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Handed over, verdict not yet acted on; read and changed on the consumer thread.
        self.waiting: dict[int, Holder | None] = {}
        self._ids = itertools.count()

    def keep(
        self,
        what: str,
        store: Callable[[], None],
        then: Callable[[], None],
        give_up: Callable[[str], None],
        holder: Holder | None = None,
    ) -> None:
        """Store in the background; ``then()`` or ``give_up(reason)`` runs on the consumer."""
        key = next(self._ids)
        self.waiting[key] = holder
        done_then, done_give_up = self._settling(key, then, give_up)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskq-result-keeper", daemon=True
                )
                self._thread.start()
        deadline = time.monotonic() + self.budget
        self._queue.put(Store(what, store, done_then, done_give_up, holder, deadline))

    def _settling(
        self, key: int, then: Callable[[], None], give_up: Callable[[str], None]
    ) -> tuple[Callable[[], None], Callable[[str], None]]:
        def done_then() -> None:
            if self.waiting.pop(key, False) is not False:
                then()

        def done_give_up(reason: str) -> None:
            if self.waiting.pop(key, False) is not False:
                give_up(reason)

        return done_then, done_give_up

    def mark_stale(self) -> None:
        """The connection that delivered the holders' messages is gone: they cannot settle."""
        for holder in self.waiting.values():
            if holder is not None:
                holder.stale = True

    def abandon(self) -> list[Holder]:
        """Stop waiting for every verdict (at shutdown); the holders, to settle otherwise."""
        holders = [h for h in self.waiting.values() if h is not None]
        self.waiting.clear()
        return holders

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)

    def _run(self) -> None:
        # One outage for everything queued: stores wait behind the first while it fails,
        # and each gives up at its own deadline, so a long outage does not add one budget
        # per store.
        backoff = Backoff(first=0.05, cap=5.0)
        incident = Incident(logger, "Result backend unavailable for states the worker stores")
        while True:
            item = self._queue.get()
            if item is None:
                return
            while True:
                try:
                    with self.backend.retry_policy(ONE_ATTEMPT):
                        item.store()
                except ResultNotStored as exc:  # may pass: try again until the deadline
                    if time.monotonic() >= item.deadline:
                        self.call_soon(functools.partial(item.give_up, _reason(item, exc)))
                        break
                    delay = backoff.next_delay()
                    incident.failed(exc, f"Trying again in {delay:.1f} s", logging.WARNING)
                    time.sleep(min(delay, max(0.0, item.deadline - time.monotonic())))
                except Exception as exc:
                    self.call_soon(functools.partial(item.give_up, _reason(item, exc)))
                    break
                else:
                    incident.resolve()
                    backoff.reset()
                    self.call_soon(item.then)
                    break


def _reason(item: Store, exc: BaseException) -> str:
    return f"could not {item.what}: {describe(exc)}"
