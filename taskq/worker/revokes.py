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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import TaskRevokedError
from .pool import signal_number

if TYPE_CHECKING:
    from .consumer import Consumer
    from .request import Request
    from .state import WorkerState

logger = logging.getLogger(__name__)


def is_revoked(state: WorkerState, request: Request) -> bool:
    """Revoked by id, or by one of its stamps (``revoke_by_stamped_headers``)."""
    if request.id in state.revoked:
        return True
    stamps, msg = state.revoked_stamps, request.message
    return bool(stamps) and stamps.match(msg.stamped_headers, msg.stamps)


def drop_revoked(consumer: Consumer) -> list[str]:
    """Revoke what waits in this worker and is now revoked; the ids revoked."""
    state = consumer.state
    dropped = []
    for key in [k for k, r in consumer.held.items() if is_revoked(state, r)]:
        request = consumer.unhold(key)
        if request is not None:
            dropped.append(request.id)
            request.revoke("revoked")
    waiting = {r.id for r in consumer.active.values() if not r.worker_pid and is_revoked(state, r)}
    if waiting:
        # Handed to the pool, not started: the batches come back Withdrawn (see dispatch.finish).
        consumer.pool.withdraw_tasks(waiting)
    if any(is_revoked(state, r) for r in consumer.ready):
        keep: deque[Request] = deque()
        for request in consumer.ready:
            if is_revoked(state, request):
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
    return terminate_where(consumer, lambda r: r.id in wanted, signal_name)


def terminate_where(
    consumer: Consumer, chosen: Callable[[Request], bool], signal_name: str
) -> list[str]:
    """Signal the pool process running each active task ``chosen`` picks; their ids."""
    killed = []
    for request in consumer.active.values():
        if chosen(request) and consumer.pool.terminate_job(request, signal_name):
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
