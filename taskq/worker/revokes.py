"""Revoked tasks: what the worker does with those it holds, and with those it does not.

A revoked task never runs here. Where it is when the revoke comes decides how:

- reserved (waiting for a pool slot) or held for its ETA: revoked at once, acked;
- handed to the pool but not started: its batch is taken back (the pool's claims make
  sure no process starts it meanwhile) and the task is revoked when the batch is reported;
- running: it finishes, unless the revoke says ``terminate``: then its process is
  signalled, the pool starts another, and the task is REVOKED and acked, not run again;
- not here at all: REVOKED is stored at once if nobody started it (Celery 5.7's rule), and
  any copy that comes later is revoked on arrival (strategy.py checks the revoked ids).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import TaskRevokedError
from .pool import signal_number

if TYPE_CHECKING:
    from .consumer import Consumer
    from .request import Request

logger = logging.getLogger("taskq.worker")


def drop_revoked(consumer: Consumer) -> list[str]:
    """Revoke what waits in this worker and is now revoked; the ids revoked."""
    revoked = consumer.state.revoked
    dropped = []
    for key in [k for k, r in consumer.held.items() if r.id in revoked]:
        request = consumer.unhold(key)
        if request is not None:
            dropped.append(request.id)
            request.revoke("revoked")
    waiting = {r.id for r in consumer.active.values() if r.id in revoked and not r.worker_pid}
    if waiting:
        # Handed to the pool, not started: the batches come back Withdrawn (see dispatch.finish).
        consumer.pool.withdraw_tasks(waiting)
    if any(r.id in revoked for r in consumer.ready):
        keep: deque[Request] = deque()
        for request in consumer.ready:
            if request.id in revoked:
                dropped.append(request.id)
                request.revoke("revoked")
            else:
                keep.append(request)
        consumer.ready = keep
    return dropped


def mark_elsewhere(consumer: Consumer, task_id: str) -> None:
    """REVOKED in the backend for a task this worker does not hold (off the loop's thread)."""
    consumer.keeper.keep(
        f"mark task {task_id} revoked",
        functools.partial(_mark_if_not_started, consumer.app, task_id),
        then=_nothing,
        give_up=functools.partial(_not_marked, task_id),
    )


def terminate(consumer: Consumer, ids: list[str], signal_name: str) -> list[str]:
    """Signal the pool process running each of these tasks; the ids signalled."""
    wanted = set(ids)
    killed = []
    for request in consumer.active.values():
        if request.id in wanted and consumer.pool.terminate_job(request, signal_name):
            request.terminated = True
            request.signum = signal_number(signal_name)
            killed.append(request.id)
    return killed


def _mark_if_not_started(app: Any, task_id: str) -> None:
    # Never over an outcome, nor over a task another worker started.
    state = app.backend.get_task_meta(task_id)["status"]
    if state in (states.PENDING, states.RECEIVED, states.RETRY, states.REJECTED):
        app.backend.store_result(task_id, TaskRevokedError("revoked"), states.REVOKED)


def _nothing() -> None:
    pass


def _not_marked(task_id: str, reason: str) -> None:
    logger.error("Task %s is revoked, but its state could not be stored: %s", task_id, reason)
