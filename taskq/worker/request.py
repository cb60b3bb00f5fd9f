"""Request: one received task message, from reservation to ack or reject.

It decides *when* the message is acknowledged (the ack policy) and what happens when the
run ends badly (worker lost, time limit). Every method here runs on the consumer thread,
because it touches the kombu message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .. import signals, states
from ..deadletter import deliveries_of
from ..exceptions import (
    BackendError,
    DeadLettered,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from ..message import TaskMessage
from .keeper import InlineKeeper, Keeper
from .redelivery import Redelivery, send_acks_now, was_redelivered
from .tracer import Job, Outcome, store_failure, store_revoked

if TYPE_CHECKING:
    from kombu import Queue

    from ..app import Taskq
    from ..task import Task
    from .metrics import WorkerMetrics

logger = logging.getLogger(__name__)


class TaskEvents(Protocol):
    """Where a request reports what became of it (worker/monitor.py)."""

    metrics: WorkerMetrics | None  # counted by task name, when the worker serves metrics

    def task(self, event_type: str, task_id: str, **fields: Any) -> None: ...

    def succeeded(self, task_id: str, result: str, runtime: float) -> None: ...


class _NoEvents:
    metrics: WorkerMetrics | None = None

    def task(self, event_type: str, task_id: str, **fields: Any) -> None:
        pass

    def succeeded(self, task_id: str, result: str, runtime: float) -> None:
        pass


NO_EVENTS = _NoEvents()


@dataclass(frozen=True)
class AckPolicy:
    """The ack rules for one task, resolved once at start-up from task options and config."""

    acks_late: bool
    reject_on_worker_lost: bool
    acks_on_failure_or_timeout: bool
    time_limit: float | None
    soft_time_limit: float | None
    max_deliveries: int | None

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
            max_deliveries=o.max_deliveries
            if o.max_deliveries is not None
            else c.task_max_deliveries,
        )


class Request:
    """A reserved task. Exactly one of ``on_outcome``, ``on_error`` or ``revoke`` ends it."""

    def __init__(
        self,
        app: Taskq,
        message: TaskMessage,
        raw: Any,
        policy: AckPolicy,
        hostname: str,
        queue: Queue,
        redelivery: Redelivery,
        keeper: Keeper | None = None,
        events: TaskEvents = NO_EVENTS,
    ):
        self.app = app
        self.events = events
        self.keeper: Keeper = keeper or InlineKeeper(app.backend)
        self.message = message
        self.raw = raw
        self.policy = policy
        self.hostname = hostname
        self.queue = queue
        self.redelivery = redelivery
        self.acknowledged = False
        self.stale = False  # set when the connection that delivered it is gone
        self.interrupted = False  # set when a cold stop kills its process: not its fault
        self.terminated = False  # set when a revoke with terminate=True killed its process
        self.signum: int | None = None  # the signal that did
        self.worker_pid: int | None = None  # the pool process running it (prefork)
        self.time_start: float | None = None  # when it was handed to the pool (wall time)
        self.redelivered = was_redelivered(raw)
        # Earlier deliveries of this message that ended without a result.
        self.deliveries = deliveries_of(raw.headers) + (1 if self.redelivered else 0)

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

    @property
    def reply_to(self) -> str | None:
        props = getattr(self.raw, "properties", None) or {}
        value = props.get("reply_to")
        return value if isinstance(value, str) else None

    def job(self) -> Job:
        return Job(self.message, self.delivery_info(), self.hostname, self.reply_to)

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

    def may_share_batch(self) -> bool:
        # A batch has one time limit and starts as a whole: a task with limits of its
        # own, or acked when it starts, runs alone.
        return self.policy.acks_late and self.time_limits() == (None, None)

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.message.expires
        return expires is not None and expires <= (now or datetime.now(UTC))

    def admit(self) -> bool:
        """Check the delivery count before anything else; False: the message was moved."""
        limit = self.policy.max_deliveries
        if limit is not None and self.deliveries >= limit:
            self.bury(
                f"delivered {self.deliveries} times without finishing (task_max_deliveries={limit})"
            )
            return False
        if self.redelivered:
            # A worker died holding it. The broker does not count how often, so write the
            # count into a fresh copy before running it: a task that kills its whole worker
            # must not loop forever.
            logger.warning(
                "Task %r came back from a worker that stopped holding it (delivery %d)",
                self,
                self.deliveries + 1,
            )
            self.give_back()
            return False
        return True

    # -- settling the message, all idempotent
    def ack(self) -> None:
        self._settled(self.raw.ack)

    def give_back(self) -> None:
        """Return the message unchanged in count: it was not run, or we stopped it."""
        self._settled(lambda: self.redelivery.give_back(self.raw, self.queue, self.deliveries))

    def park(self) -> bool:
        """Leave a far-future ETA task with the broker; False if the broker cannot keep it."""
        if self.message.eta is None or not self.redelivery.can_park(self.raw, self.queue):
            return False
        due = self.message.eta.timestamp()
        self._settled(lambda: self.redelivery.park(self.raw, self.queue, due, self.deliveries))
        return True

    def count_failed_delivery(self, why: str) -> None:
        """This delivery ended without a result: try again, or bury it past the limit."""
        used = self.deliveries + 1
        limit = self.policy.max_deliveries
        if limit is not None and used >= limit:
            self.bury(f"{why}; delivered {used} times without finishing (limit {limit})", used=used)
            return
        logger.warning("Task %r: %s; returned for delivery %d", self, why, used + 1)
        self._settled(lambda: self.redelivery.give_back(self.raw, self.queue, used))

    def bury(self, reason: str, store: bool = True, used: int | None = None) -> None:
        """To the dead-letter queue, recording FAILURE(DeadLettered) unless ``store`` is off.

        ``used``: deliveries used up, this one included if it ended without a result.
        """
        if self.acknowledged or self.stale:
            return
        count = self.deliveries if used is None else used
        self._settled(lambda: self.redelivery.bury(self.raw, self.queue, reason, count))
        if store:
            # Moved first, so nothing waits on the store; a store that never lands is said.
            self._keep_failure(DeadLettered(reason), then=_nothing, give_up=self._unrecorded)

    def _settled(self, move: Callable[[], None]) -> None:
        if not self.acknowledged and not self.stale:
            move()
        self.acknowledged = True

    # -- pool callbacks, relayed to the consumer thread
    def on_accepted(self) -> None:
        if not self.policy.acks_late:
            self.ack()  # Celery's early ack: the task is now at-most-once
            send_acks_now(self.raw)

    def on_outcome(self, outcome: Outcome) -> None:
        self._tell(outcome)
        if outcome.bury:
            logger.error("Task %r: %s", self, outcome.detail)
            self.bury(outcome.bury, store=False)  # the tracer stored the TypeError
            return
        if outcome.state == states.REJECTED:
            logger.info("Task %r rejected (requeue=%s): %s", self, outcome.requeue, outcome.detail)
            if outcome.requeue:
                self.count_failed_delivery(f"rejected with requeue: {outcome.detail}")
            else:
                # The task chose this, so its state stays as Celery leaves it (no FAILURE).
                self.bury(f"rejected by the task: {outcome.detail}", store=False)
            return
        if outcome.state == states.FAILURE:
            logger.error("Task %r raised: %s", self, outcome.detail)
            if self.policy.acks_late and not self.policy.acks_on_failure_or_timeout:
                self.count_failed_delivery("the task failed")
                return
        elif outcome.state == states.RETRY:
            logger.info("Task %r retry: %s", self, outcome.detail)
        elif logger.isEnabledFor(logging.INFO):
            done = "succeeded" if outcome.state == states.SUCCESS else outcome.state.lower()
            logger.info("Task %r %s in %.4fs: %s", self, done, outcome.runtime, outcome.detail)
        self.ack()

    def on_error(self, exc: BaseException) -> None:
        """The run ended without an outcome: its process died, it hit the hard limit, or
        its result could not be stored."""
        if self.terminated:
            # Revoked with terminate: its process was killed on purpose. Acked, not run
            # again, and REVOKED, as Celery does.
            self.revoke("terminated")
            return
        if self.interrupted and self.policy.acks_late:
            self.give_back()
            return
        self.events.task("task-failed", self.id, exception=repr(exc), traceback="")
        self._count(states.FAILURE)
        if isinstance(exc, BackendError):
            # It ran, but whoever waits for it would wait for ever: keep the message where
            # it can be seen and run again, rather than ack it as if all were well.
            logger.error("Task %r ran, but its result could not be stored: %s", self, exc)
            self.bury(f"its result could not be stored: {exc}", store=False)
            return
        if (
            isinstance(exc, WorkerLostError)
            and self.policy.acks_late
            and self.policy.reject_on_worker_lost
        ):
            self.count_failed_delivery(f"its process exited ({exc})")
            return
        if not isinstance(exc, WorkerLostError | TimeLimitExceeded):
            logger.error("Task %r: the worker could not run it: %r", self, exc)
        else:
            logger.error("Task %r: %s: %s", self, type(exc).__name__, exc)
        then: Callable[[], None]
        if self.policy.acks_late and not self.policy.acks_on_failure_or_timeout:
            then = functools.partial(self.count_failed_delivery, type(exc).__name__)
        else:
            then = self.ack
        self._keep_failure(exc, then=then, give_up=self._bury_unstored)

    def revoke(self, reason: str) -> None:
        """Mark REVOKED without running (expired, or revoked), then ack the message."""
        logger.info("Task %r %s%s", self, reason, "" if reason == "terminated" else ": not run")
        self.events.task("task-revoked", self.id, terminated=reason == "terminated",
                         signum=self.signum, expired=reason == "expired")  # fmt: skip
        self._count(states.REVOKED)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(
                sender=self.app.tasks.get(self.message.task), request=self,
                terminated=reason == "terminated", signum=self.signum, expired=reason == "expired",
            )  # fmt: skip
        self.keeper.keep(
            f"store the REVOKED state of task {self!r}",
            functools.partial(
                store_revoked, self.app, self.message, TaskRevokedError(reason), self.reply_to
            ),
            then=self.ack,
            give_up=self._bury_unstored,
            holder=self,
        )

    def _count(self, state: str, runtime: float | None = None) -> None:
        metrics = self.events.metrics
        if metrics is not None:
            metrics.ended(self.name, state, runtime)

    def _tell(self, outcome: Outcome) -> None:
        state, send = outcome.state, self.events.task
        self._count(state, outcome.runtime)
        if state == states.SUCCESS:
            self.events.succeeded(self.id, outcome.detail, outcome.runtime)
        elif state == states.FAILURE:
            send("task-failed", self.id, exception=outcome.exception, traceback=outcome.traceback)
        elif state == states.RETRY:
            send("task-retried", self.id, exception=outcome.exception, traceback=outcome.traceback)
        elif state == states.REJECTED:
            send("task-rejected", self.id, requeue=outcome.requeue)

    # -- states decided here, stored by the keeper before the message is settled
    def _keep_failure(
        self, exc: BaseException, then: Callable[[], None], give_up: Callable[[str], None]
    ) -> None:
        self.keeper.keep(
            f"store the FAILURE of task {self!r}",
            functools.partial(
                store_failure, self.app, self.message, exc, self.hostname, self.reply_to
            ),
            then=then,
            give_up=give_up,
            holder=self,
        )

    def _bury_unstored(self, reason: str) -> None:
        logger.error("Task %r: %s; dead-lettered", self, reason)
        self.bury(reason, store=False)

    def _unrecorded(self, reason: str) -> None:
        logger.error("Task %r is dead-lettered, but %s", self, reason)


def _nothing() -> None:
    pass
