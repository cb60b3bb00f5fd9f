"""Runs one task where the pool put it (a child process, a thread or inline).

It calls the function, turns Retry/Ignore/Reject/exceptions into a state, stores that
state in the backend, applies link/link_error/chain, and returns a small ``Outcome`` that
the consumer uses to ack or reject the message.
"""

from __future__ import annotations

import logging
import os
import reprlib
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import states
from ..backends import ResultContext
from ..backends.chords import Chords
from ..context import Context
from ..exceptions import Ignore, Reject, Retry
from ..hooks import RunHooks, for_run
from ..join import BODY_HEADER, part_returned
from ..message import TaskMessage
from .links import apply_callbacks, apply_errbacks, fail_chain

if TYPE_CHECKING:
    from ..app import Taskq
    from ..task import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """What the pool ships to wherever the task runs (picklable)."""

    message: TaskMessage
    delivery_info: Mapping[str, Any] = field(default_factory=dict)
    hostname: str = ""
    reply_to: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What came of one run, sent back to the consumer."""

    state: str
    runtime: float = 0.0
    requeue: bool = False
    detail: str = ""
    bury: str | None = None  # the message itself is bad: dead-letter it with this reason
    exception: str = ""  # a failure's or retry's exception repr and traceback, for events
    traceback: str = ""


def trace(app: Taskq, job: Job) -> Outcome:
    msg = job.message
    task = app.tasks[msg.task]
    if not _body_copy_may_run(app, msg):
        logger.info("Task %s[%s]: a copy of this chord body already ran; dropped", msg.task, msg.id)
        return Outcome(states.IGNORED)
    context = _context(job)
    hooks = for_run(task, context)
    app.push_context(context)  # the handlers see self.request too
    try:
        outcome, retval = _run(app, job, task, hooks)
        if hooks is not None:
            hooks.after(outcome.state, retval)
        return outcome
    finally:
        app.pop_context()


def _run(app: Taskq, job: Job, task: Task[Any, Any], hooks: RunHooks | None) -> tuple[Outcome, Any]:
    """Run the function, store what became of it; the outcome and the value or exception."""
    msg = job.message
    store = not _ignores_result(task, msg)
    backend = app.backend
    result_context = _result_context(
        msg, job.hostname, job.delivery_info.get("routing_key"), job.reply_to
    )
    started = time.monotonic()
    if hooks is not None:
        hooks.prerun()
    try:
        if store and _tracks_started(task, app):
            backend.store_result(
                msg.id,
                {"pid": os.getpid(), "hostname": job.hostname},
                states.STARTED,
                None,
                result_context,
            )
        if hooks is not None:
            hooks.before_start()
        retval = task.call_with_autoretry(msg.args, msg.kwargs)
    except Retry as exc:
        reason = exc.exc if exc.exc is not None else exc
        tb = _format_tb(exc)
        backend.store_result(msg.id, reason, states.RETRY, tb, result_context)
        if hooks is not None:
            hooks.retried(exc)
        return Outcome(states.RETRY, time.monotonic() - started, detail=str(exc),
                       exception=_short(reason), traceback=tb or ""), exc  # fmt: skip
    except Ignore as exc:
        return Outcome(states.IGNORED, time.monotonic() - started), exc
    except Reject as exc:
        runtime = time.monotonic() - started
        return Outcome(states.REJECTED, runtime, requeue=exc.requeue, detail=str(exc.reason)), exc
    except Exception as exc:
        tb = traceback.format_exc()
        if store or app.conf.task_store_errors_even_if_ignored:
            backend.store_result(msg.id, exc, states.FAILURE, tb, result_context)
        _after_failure(app, msg, exc, tb, app.current_context())
        if hooks is not None:
            hooks.failed(exc, tb)
        return _failure(task, msg, exc, tb, time.monotonic() - started), exc
    # Still inside the context: the callbacks count as children of this task, and
    # Celery sends them before the result is stored so the result can list them.
    apply_callbacks(app, msg, retval)
    done = replace(result_context, children=tuple(app.current_children()))
    keep = (
        (lambda: backend.store_result(msg.id, retval, states.SUCCESS, None, done))
        if store
        else None
    )
    # The store, then (as Celery) the chord's count: the last member sends the body.
    part_returned(app, msg.id, msg.group, msg.group_index, msg.chord, states.SUCCESS, retval,
                  (msg.id, msg.root_id), keep)  # fmt: skip
    if hooks is not None:
        hooks.succeeded(retval)
    return Outcome(states.SUCCESS, time.monotonic() - started, detail=_short(retval)), retval


def _failure(
    task: Task[Any, Any], msg: TaskMessage, exc: Exception, tb: str, runtime: float
) -> Outcome:
    bad_call = _bad_arguments(task, msg) if isinstance(exc, TypeError) else None
    said = _short(exc)
    if bad_call is not None:
        return Outcome(states.FAILURE, runtime, detail=bad_call, bury=bad_call,
                       exception=said, traceback=tb)  # fmt: skip
    return Outcome(states.FAILURE, runtime, detail=f"{exc!r}\n{tb}", exception=said, traceback=tb)


def _bad_arguments(task: Task[Any, Any], msg: TaskMessage) -> str | None:
    """Why the message's arguments do not fit the task, checked only after a TypeError."""
    try:
        task.check_arguments(msg.args, msg.kwargs)
    except TypeError as exc:
        return f"arguments do not match the task: {exc}"
    return None


def store_failure(
    app: Taskq, msg: TaskMessage, exc: BaseException, hostname: str, reply_to: str | None = None
) -> None:
    """Record FAILURE from the consumer, for a task whose process could not (it died)."""
    task = app.tasks.get(msg.task)
    if (
        task is not None
        and _ignores_result(task, msg)
        and not app.conf.task_store_errors_even_if_ignored
    ):
        return
    context = _result_context(msg, hostname, reply_to=reply_to)
    app.backend.store_result(msg.id, exc, states.FAILURE, None, context)
    _after_failure(app, msg, exc, None, None)


def store_revoked(
    app: Taskq, msg: TaskMessage, exc: BaseException, reply_to: str | None = None
) -> None:
    """Record REVOKED from the consumer (expired or revoked, not run); a chord counts it,
    and a chain does not wait for steps that will never run."""
    context = ResultContext(reply_to=reply_to) if reply_to else None
    app.backend.store_result(msg.id, exc, states.REVOKED, None, context)
    part_returned(app, msg.id, msg.group, msg.group_index, msg.chord, states.REVOKED, exc)
    fail_chain(app, msg, exc, None)


def _after_failure(
    app: Taskq, msg: TaskMessage, exc: BaseException, tb: str | None, request: Context | None
) -> None:
    """Celery's order: the chord counts the failure, the chain's rest fails, errbacks run."""
    part_returned(app, msg.id, msg.group, msg.group_index, msg.chord, states.FAILURE, exc)
    fail_chain(app, msg, exc, tb)
    apply_errbacks(app, msg, exc, tb, request)


def _body_copy_may_run(app: Taskq, msg: TaskMessage) -> bool:
    mark = msg.custom_headers.get(BODY_HEADER)
    if not isinstance(mark, str) or " " not in mark:
        return True
    backend = app.backend
    group_id, token = mark.split(" ", 1)
    if isinstance(backend, Chords) and not backend.chord_body_starts(group_id, token):
        return False  # another copy of the body was sent after this one and runs instead
    # This copy may run, and may have: its worker can die after the run, before the ack.
    # A body that finished is not run again (the join promises it runs once).
    return bool(backend.get_task_meta(msg.id)["status"] != states.SUCCESS)


def _result_context(
    msg: TaskMessage, hostname: str, queue: str | None = None, reply_to: str | None = None
) -> ResultContext:
    return ResultContext(
        name=msg.task, args=msg.args, kwargs=msg.kwargs, worker=hostname, retries=msg.retries,
        queue=queue, group_id=msg.group, parent_id=msg.parent_id, reply_to=reply_to,
    )  # fmt: skip


def _context(job: Job) -> Context:
    msg = job.message
    return Context(
        id=msg.id,
        task=msg.task,
        args=msg.args,
        kwargs=msg.kwargs,
        retries=msg.retries,
        eta=msg.eta,
        expires=msg.expires,
        root_id=msg.root_id,
        parent_id=msg.parent_id,
        group=msg.group,
        group_index=msg.group_index,
        callbacks=msg.callbacks,
        errbacks=msg.errbacks,
        chain=msg.chain,
        chord=msg.chord,
        timelimit=(msg.time_limit, msg.soft_time_limit),
        delivery_info=job.delivery_info,
        hostname=job.hostname,
        origin=msg.origin,
        reply_to=job.reply_to,
        headers=msg.custom_headers,
        ignore_result=bool(msg.ignore_result),
        called_directly=False,
        replaced_task_nesting=msg.replaced_task_nesting,
    )


def _ignores_result(task: Task[Any, Any], msg: TaskMessage) -> bool:
    # The message's own flag wins; None (a send_task to an unknown name) means the task's.
    return task.ignore_result if msg.ignore_result is None else msg.ignore_result


def _tracks_started(task: Task[Any, Any], app: Taskq) -> bool:
    value = task.options.track_started
    return bool(app.conf.task_track_started if value is None else value)


def _format_tb(exc: Retry) -> str | None:
    if exc.exc is None:
        return None
    return "".join(traceback.format_exception(exc.exc))


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 200


def _short(value: Any) -> str:
    # reprlib stops early: a full repr() of a large result would cost more than the task.
    text = _SHORT.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
