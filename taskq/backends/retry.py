"""Storing again when the backend fails for a while: the policy, and the loop that applies it.

A result that cannot be stored is a task lost to its caller, who waits on PENDING for ever.
So a store that fails in a way that may pass (a lost connection, a server that is loading
or out of memory, a disk that is full) is tried again with backoff, per Celery's settings
``result_backend_always_retry``, ``result_backend_max_retries`` and the two sleeps. When the
policy runs out, ``ResultNotStored`` says so, and the worker gives the task to the
dead-letter queue rather than acknowledge it as if all were well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..backoff import Backoff, Incident, describe
from ..exceptions import ResultNotStored

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    enabled: bool = True
    max_retries: int | None = 30  # attempts after the first; None: until it works
    base_sleep: float = 0.01  # seconds before the first retry; doubles, with jitter
    max_sleep: float = 10.0

    @classmethod
    def from_conf(cls, conf: Any) -> RetryPolicy:
        return cls(
            enabled=conf.result_backend_always_retry,
            max_retries=conf.result_backend_max_retries,
            base_sleep=conf.result_backend_base_sleep_between_retries_ms / 1000,
            max_sleep=conf.result_backend_max_sleep_between_retries_ms / 1000,
        )


ONE_ATTEMPT = RetryPolicy(max_retries=0)


def retrying(
    policy: RetryPolicy,
    attempt: Callable[[], T],
    transient: Callable[[BaseException], bool],
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``, again after each transient failure while the policy allows.

    A failure that is not transient is raised as it is. A transient one that outlasts the
    policy (or any transient one, with retries off) raises ``ResultNotStored``.
    """
    backoff = Backoff(first=policy.base_sleep, cap=policy.max_sleep)
    incident = Incident(logger, f"Result backend: could not {what}")
    started = time.monotonic()
    while True:
        try:
            value = attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            limit = policy.max_retries if policy.enabled else 0
            if limit is not None and backoff.failures >= limit:
                raise ResultNotStored(
                    f"Could not {what}: {describe(exc)} (tried {backoff.failures + 1} times "
                    f"over {time.monotonic() - started:.1f} s; see result_backend_max_retries)"
                ) from exc
            delay = backoff.next_delay()
            incident.failed(exc, f"Trying again in {delay:.2f} s", level=logging.WARNING)
            sleep(delay)
        else:
            incident.resolve()
            return value
