"""Request: one received task message, from reservation to ack or reject.

It decides *when* the message is acknowledged (the ack policy) and what happens when the
run ends badly (worker lost, time limit). Every method here runs on the consumer thread,
because it touches the kombu message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from ..message import TaskMessage
from .tracer import Job, Outcome, store_failure

if TYPE_CHECKING:
    from ..app import Taskq
    from ..task import Task

logger = logging.getLogger("taskq.worker")


@dataclass(frozen=True)
class AckPolicy:
    """The ack rules for one task, resolved once at start-up from task options and config."""

    acks_late: bool
    reject_on_worker_lost: bool
    acks_on_failure_or_timeout: bool
    time_limit: float | None
    soft_time_limit: float | None

    @classmethod
    def for_task(cls, app: Taskq, task: Task[Any, Any]) -> AckPolicy:
        c, o = app.conf, task.options
        return cls(
            acks_late=task.acks_late,
            reject_on_worker_lost=bool(
                c.task_reject_on_worker_lost
                if o.reject_on_worker_lost is None
                else o.reject_on_worker_lost
            ),
            acks_on_failure_or_timeout=c.task_acks_on_failure_or_timeout,
            time_limit=o.time_limit if o.time_limit is not None else c.task_time_limit,
            soft_time_limit=o.soft_time_limit
            if o.soft_time_limit is not None
            else c.task_soft_time_limit,
        )


class Request:
    """A reserved task. Exactly one of ``on_outcome``, ``on_error`` or ``revoke`` ends it."""

    def __init__(
        self, app: Taskq, message: TaskMessage, raw: Any, policy: AckPolicy, hostname: str
    ):
        self.app = app
        self.message = message
        self.raw = raw
        self.policy = policy
        self.hostname = hostname
        self.acknowledged = False
        self.stale = False  # set when the connection that delivered it is gone

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def name(self) -> str:
        return self.message.task

    def __repr__(self) -> str:
        return f"{self.name}[{self.id}]"

    def delivery_info(self) -> dict[str, Any]:
        info = getattr(self.raw, "delivery_info", None) or {}
        return {k: info.get(k) for k in ("exchange", "routing_key", "priority", "redelivered")}

    def job(self) -> Job:
        props = getattr(self.raw, "properties", None) or {}
        return Job(self.message, self.delivery_info(), self.hostname, props.get("reply_to"))

    def time_limits(self) -> tuple[float | None, float | None]:
        # Limits sent with the message override the task's own, as in Celery.
        hard = (
            self.message.time_limit
            if self.message.time_limit is not None
            else self.policy.time_limit
        )
        soft = (
            self.message.soft_time_limit
            if self.message.soft_time_limit is not None
            else self.policy.soft_time_limit
        )
        return hard, soft

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.message.expires
        return expires is not None and expires <= (now or datetime.now(UTC))

    # -- ack / reject, all idempotent
    def ack(self) -> None:
        if not self.acknowledged and not self.stale:
            self.raw.ack()
        self.acknowledged = True

    def requeue(self) -> None:
        if not self.acknowledged and not self.stale:
            self.raw.reject(requeue=True)
        self.acknowledged = True

    def drop(self) -> None:
        if not self.acknowledged and not self.stale:
            self.raw.reject(requeue=False)
        self.acknowledged = True

    # -- pool callbacks, relayed to the consumer thread
    def on_accepted(self) -> None:
        if not self.policy.acks_late:
            self.ack()  # Celery's early ack: the task is now at-most-once

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.state == states.REJECTED:
            logger.info("Task %r rejected (requeue=%s): %s", self, outcome.requeue, outcome.detail)
            self.requeue() if outcome.requeue else self.drop()
            return
        if outcome.state == states.FAILURE:
            logger.error("Task %r raised: %s", self, outcome.detail)
            if self.policy.acks_late and not self.policy.acks_on_failure_or_timeout:
                self.requeue()
                return
        elif outcome.state == states.RETRY:
            logger.info("Task %r retry: %s", self, outcome.detail)
        else:
            logger.info(
                "Task %r %s in %.4fs: %s",
                self,
                outcome.state.lower(),
                outcome.runtime,
                outcome.detail,
            )
        self.ack()

    def on_error(self, exc: BaseException) -> None:
        """The run ended without an outcome: its process died, or it hit the hard limit."""
        if (
            isinstance(exc, WorkerLostError)
            and self.policy.acks_late
            and self.policy.reject_on_worker_lost
        ):
            logger.warning("Task %r: its process exited (%s); requeued for another try", self, exc)
            self.requeue()
            return
        if not isinstance(exc, WorkerLostError | TimeLimitExceeded):
            logger.error("Task %r: the worker could not run it: %r", self, exc)
        else:
            logger.error("Task %r: %s: %s", self, type(exc).__name__, exc)
        self._store_failure(exc)
        if self.policy.acks_late and not self.policy.acks_on_failure_or_timeout:
            self.requeue()
        else:
            self.ack()

    def revoke(self, reason: str) -> None:
        """Mark REVOKED without running (expired, or revoked) and ack the message."""
        logger.info("Task %r %s: not run", self, reason)
        try:
            self.app.backend.store_result(self.id, TaskRevokedError(reason), states.REVOKED)
        except Exception:
            logger.exception("Task %r: could not store REVOKED", self)
        self.ack()

    def _store_failure(self, exc: BaseException) -> None:
        try:
            store_failure(self.app, self.message, exc, self.hostname)
        except Exception:
            logger.exception("Task %r: could not store its failure", self)
