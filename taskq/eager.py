"""Eager: tasks run in the calling process (``apply``), as a worker would run them.

Handlers and task signals are called in the worker's order (taskq/hooks.py); a handler's
error is raised to the caller, so a test sees it. A retry runs again at once, here.
``link`` callbacks and ``link_error`` errbacks are applied after the run.

With ``task_always_eager``, ``delay``/``apply_async`` of a task or of any canvas run here
(``apply_signature``) instead of sending; ``send_task`` still sends, as in Celery.
Options about delivery (queue, countdown, eta, expires, priority, ...) mean nothing here
and are ignored; an unknown option is still an error. ``task_eager_propagates`` (or
``throw=True``) raises a failure at the call instead of returning it in the result.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import states
from .calling import OPTION_NAMES
from .context import Context
from .exceptions import Retry
from .hooks import for_run

if TYPE_CHECKING:
    from .result import EagerResult, GroupResult
    from .signature import Signature
    from .task import Task

OPTIONS = OPTION_NAMES | {"throw", "link", "link_error"}


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
    retries = int(options.get("retries") or 0)
    call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})
    task.check_arguments(call_args, call_kwargs)
    while True:
        context = Context(
            id=task_id,
            task=task.name,
            args=call_args,
            kwargs=call_kwargs,
            retries=retries,
            root_id=options.get("root_id") or task_id,
            parent_id=options.get("parent_id"),
            is_eager=True,
            called_directly=False,
        )
        state, value, tb = run_with_context(task, context)
        if state != states.RETRY:
            break
        retries += 1
    result: EagerResult[Any] = EagerResult(task_id, value, state, tb, app=task.app)
    if state == states.SUCCESS:
        _follow(task, options.get("link"), lambda sig: sig.apply_async((value,)))
    elif state == states.FAILURE:
        # Celery's two errback conventions, as a worker applies them (worker/links.py).
        def errback(sig: Signature) -> Any:
            handler = task.app.tasks.get(sig.task)
            if handler is not None and handler.takes_request:
                return sig(context, value, tb)
            return sig.apply_async((task_id,))

        _follow(task, options.get("link_error"), errback)
        throw = options.get("throw")
        if throw or (throw is None and task.app.conf.task_eager_propagates):
            raise value
    return result


def _follow(task: Task[Any, Any], given: Any, apply: Any) -> None:
    from .signature import maybe_signature

    links = given if isinstance(given, list | tuple) else [given] if given else []
    for link in links:
        apply(maybe_signature(link, app=task.app))


def apply_signature(sig: Signature, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    """Any signature run here, now: a task, a chain, a group or a chord; its result (an
    ``EagerResult``, or a ``GroupResult`` of them for a group)."""
    from .canvas import chain, chord, group

    if isinstance(sig, chain):
        return _chain(sig, args, kwargs, options)
    if isinstance(sig, chord):
        return _chord(sig, args, kwargs, options)
    if isinstance(sig, group):
        return _group(sig, args, kwargs, options)
    new_args, new_kwargs = sig._merge(args, kwargs)
    task = sig._app().tasks[sig.task]
    return task.apply(new_args, new_kwargs, **{**sig.options, **options})


def _chain(sig: Any, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    result: Any = None
    for step in sig.tasks:
        previous = result
        if previous is None:
            result = apply_signature(step, args, kwargs)
        else:
            result = apply_signature(step, (previous.get(),))
        result.parent = previous
        if result.failed():
            break  # the rest of a failed chain never runs
    assert result is not None, "an empty chain"
    return result


def _group(sig: Any, args: Any, kwargs: Any, options: dict[str, Any]) -> GroupResult:
    from .result import GroupResult  # at run time: result imports the canvas

    results = [apply_signature(member, args, kwargs) for member in sig.tasks]
    return GroupResult(options.get("task_id") or str(uuid.uuid4()), results, app=sig._app())


def _chord(sig: Any, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    header = _group(sig.header, args, kwargs, {})
    failed = [r for r in header.results if r.failed()]
    if failed:
        return failed[0]  # Celery's chord fails with its first failed member
    return apply_signature(sig.body, ([r.get() for r in header.results],))


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
