"""Eager: a task run in the calling process (``apply``), as a worker would run it.

Handlers and task signals are called in the worker's order (taskq/hooks.py); a handler's
error is raised to the caller, so a test sees it. A retry runs again at once, here.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import states
from .context import Context
from .exceptions import Retry
from .hooks import for_run

if TYPE_CHECKING:
    from .result import EagerResult
    from .task import Task

OPTIONS = frozenset({"task_id", "retries", "throw"})


def apply_here(
    task: Task[Any, Any],
    args: tuple[Any, ...] | list[Any] | None,
    kwargs: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> EagerResult[Any]:
    from .result import EagerResult

    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"apply() got unknown option(s): {', '.join(sorted(unknown))}")
    task_id = options.get("task_id") or str(uuid.uuid4())
    retries = int(options.get("retries", 0))
    call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})
    task.check_arguments(call_args, call_kwargs)
    while True:
        context = Context(
            id=task_id,
            task=task.name,
            args=call_args,
            kwargs=call_kwargs,
            retries=retries,
            root_id=task_id,
            is_eager=True,
            called_directly=False,
        )
        state, value, tb = run_with_context(task, context)
        if state != states.RETRY:
            return EagerResult(task_id, value, state, tb, app=task.app)
        retries += 1


def run_with_context(task: Task[Any, Any], context: Context) -> tuple[str, Any, str | None]:
    """Run with ``task.request`` set; returns (state, value or exception, traceback)."""
    hooks = for_run(task, context, eager=True)
    task.app.push_context(context)
    state, tb = states.FAILURE, None
    value: Any = None
    try:
        if hooks is not None:
            hooks.prerun()
            hooks.before_start()
        value = task.call_with_autoretry(context.args, context.kwargs)
        state = states.SUCCESS
        if hooks is not None:
            hooks.succeeded(value)
    except Retry as exc:
        state, value = states.RETRY, exc
        if hooks is not None:
            hooks.retried(exc)
    except Exception as exc:
        state, value, tb = states.FAILURE, exc, traceback.format_exc()
        if hooks is not None:
            hooks.failed(exc, tb)
    finally:
        try:
            if hooks is not None:
                hooks.after(state, value)
        finally:
            task.app.pop_context()
    return state, value, tb
