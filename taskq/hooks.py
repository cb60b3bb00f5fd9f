"""Hooks: a task's handlers and the task signals around one run, in Celery's order.

Where the task runs (the worker's tracer, or ``apply`` in the caller), in this order:
``task_prerun``, ``before_start``, the function, then ``on_success`` + ``task_success``,
``on_retry`` + ``task_retry`` or ``on_failure`` + ``task_failure``, then ``after_return``
(not after a retry, an ignore or a reject) and last ``task_postrun``, whatever happened.

An error in ``before_start`` fails the task, as an error in the function would. Later
handlers run after the outcome is stored: what they raise is logged and changes nothing
(a task that succeeded does not become a failure, and its errbacks do not run).

A task with no handler of its own and no receiver on these signals gets ``None`` from
``for_run``: the tracer then skips all of this, so unused hooks cost nothing per task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import signals
from .exceptions import ExceptionInfo, Retry

if TYPE_CHECKING:
    from .context import Context
    from .task import Task

logger = logging.getLogger(__name__)

_SIGNALS = (
    signals.task_prerun,
    signals.task_postrun,
    signals.task_success,
    signals.task_failure,
    signals.task_retry,
)
NOT_AFTER = frozenset({"RETRY", "IGNORED", "REJECTED"})  # states after_return is not told of


def for_run(task: Task[Any, Any], context: Context, eager: bool = False) -> RunHooks | None:
    """The hooks of one run, or None when nothing would be called.

    ``eager`` (``apply``, eager mode): a handler's error is raised to the caller, as
    Celery does, so a test sees it.
    """
    if not task.hooks and not any(s.receivers for s in _SIGNALS):
        return None
    return RunHooks(task, context, eager)


class RunHooks:
    """The handlers of one run; each method is one point of the run."""

    def __init__(self, task: Task[Any, Any], context: Context, eager: bool = False):
        self.task = task
        self.eager = eager
        self.context = context
        self.args: tuple[Any, ...] = context.args
        self.kwargs: Mapping[str, Any] = context.kwargs
        self.id = context.id or ""
        self.started = time.monotonic()

    def prerun(self) -> None:
        signals.task_prerun.send(
            sender=self.task, task_id=self.id, task=self.task, args=self.args, kwargs=self.kwargs
        )

    def before_start(self) -> None:
        """Just before the function; raising here fails the task, as the function would."""
        if "before_start" in self.task.hooks:
            self.task.before_start(self.id, self.args, self.kwargs)

    def succeeded(self, retval: Any) -> None:
        if "on_success" in self.task.hooks:
            self._safely("on_success", retval, self.id, self.args, self.kwargs)
        signals.task_success.send(
            sender=self.task, result=retval, runtime=time.monotonic() - self.started
        )

    def retried(self, exc: Retry) -> None:
        """``on_retry`` gets what caused the retry (``exc.exc``, may be None), as Celery's."""
        einfo = ExceptionInfo(exc)
        if "on_retry" in self.task.hooks:
            self._safely("on_retry", exc.exc, self.id, self.args, self.kwargs, einfo)
        signals.task_retry.send(sender=self.task, request=self.context, reason=exc, einfo=einfo)

    def failed(self, exc: BaseException, tb: str) -> None:
        einfo = ExceptionInfo(exc, tb)
        if "on_failure" in self.task.hooks:
            self._safely("on_failure", exc, self.id, self.args, self.kwargs, einfo)
        signals.task_failure.send(
            sender=self.task, task_id=self.id, exception=exc, args=self.args,
            kwargs=self.kwargs, traceback=exc.__traceback__, einfo=einfo,
        )  # fmt: skip

    def after(self, state: str, retval: Any) -> None:
        """Last: ``after_return`` (for a finished run), then ``task_postrun`` (always)."""
        if state not in NOT_AFTER and "after_return" in self.task.hooks:
            self._safely("after_return", state, retval, self.id, self.args, self.kwargs, None)
        signals.task_postrun.send(
            sender=self.task, task_id=self.id, task=self.task, args=self.args,
            kwargs=self.kwargs, retval=retval, state=state,
        )  # fmt: skip

    def _safely(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.task, hook)(*args)
        except Exception as exc:
            if self.eager:
                raise
            # The outcome is stored already: a handler's error is the handler's.
            logger.exception("Task %s[%s]: its %s handler raised %r", self.task.name, self.id,
                             hook, exc)  # fmt: skip


__all__ = ["RunHooks", "for_run"]
