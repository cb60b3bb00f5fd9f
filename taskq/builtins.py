"""Celery's built-in task names, registered on every app so Celery-built canvases run here.

A Celery client sends these as ordinary messages: ``celery.starmap`` for each part of
``chunks``, ``celery.map``/``celery.starmap`` for ``task.map``/``starmap``,
``celery.chord_unlock`` when its result backend cannot join chords, ``celery.accumulate``
when a task is replaced by a group. The composites (``celery.chain``, ``celery.group``,
``celery.chord``, ``celery.chunks``) are normally expanded where they are applied and
never sent; when one is, it is expanded here, in the worker, into ordinary messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .canvas import chain, chord, chunks, group
from .exceptions import ChordError
from .join import fail_body
from .signature import Signature, maybe_signature

if TYPE_CHECKING:
    from .app import Taskq
    from .task import Task


def register_builtins(app: Taskq) -> None:
    def sig(data: Any) -> Signature:
        found = maybe_signature(data, app)
        if found is None:
            raise TypeError("a signature is required")
        return found

    def call(data: Any) -> Task[Any, Any]:
        return app.tasks[sig(data).task]

    @app.task(name="celery.accumulate")
    def accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else list(args)

    @app.task(name="celery.map")
    def xmap(task: Any, it: Iterable[Any]) -> list[Any]:
        fun = call(task)
        return [fun(item) for item in it]

    @app.task(name="celery.starmap")
    def xstarmap(task: Any, it: Iterable[Any]) -> list[Any]:
        fun = call(task)
        return [fun(*item) for item in it]

    @app.task(name="celery.chunks")
    def xchunks(task: Any, it: Iterable[Any], n: int) -> Any:
        return chunks(sig(task), it, n, app=app).apply_async().as_tuple()

    @app.task(name="celery.chain")
    def xchain(*args: Any, tasks: list[Any] | None = None, **options: Any) -> Any:
        return chain(*(sig(t) for t in tasks or ()), app=app).apply_async(args).id

    @app.task(name="celery.group")
    def xgroup(
        tasks: list[Any], result: Any = None, group_id: str | None = None,
        partial_args: Iterable[Any] = (), add_to_parent: bool = True, **options: Any,
    ) -> Any:  # fmt: skip
        members = group([sig(t) for t in tasks], app=app)
        return members.apply_async(tuple(partial_args), task_id=group_id).as_tuple()

    @app.task(name="celery.chord")
    def xchord(
        header: Any, body: Any, partial_args: Iterable[Any] = (), interval: float | None = None,
        countdown: float = 1, max_retries: int | None = None, eager: bool = False, **kw: Any,
    ) -> Any:  # fmt: skip
        return chord(header, sig(body), app=app).apply_async(tuple(partial_args)).id

    @app.task(name="celery.chord_unlock", bind=True, max_retries=None, ignore_result=True)
    def chord_unlock(
        self: Task[Any, Any], /, group_id: str, callback: Any, interval: float | None = None,
        max_retries: int | None = None, result: list[Any] | None = None, **kw: Any,
    ) -> None:  # fmt: skip
        _unlock(app, self, group_id, sig(callback), interval, max_retries, result or [])

    @app.task(name="celery.backend_cleanup", ignore_result=True)
    def backend_cleanup() -> None:
        cleanup = getattr(app.backend, "cleanup", None)
        if callable(cleanup):
            cleanup()


def _unlock(
    app: Taskq,
    task: Task[Any, Any],
    group_id: str,
    callback: Signature,
    interval: float | None,
    max_retries: int | None,
    result: list[Any],
) -> None:
    """Celery's join for backends that cannot join: wait (by retrying) until every member
    is ready, then send the body with their values, or fail it with a ``ChordError``."""
    from .result import GroupResult, result_from_tuple

    members = GroupResult(group_id, [result_from_tuple(r, app) for r in result], app=app)
    if not members.ready():
        wait = interval if interval is not None else app.conf.result_chord_retry_interval
        raise task.retry(countdown=wait, max_retries=max_retries)
    for member in members.results:
        if not member.successful():
            failure = getattr(member, "result", None)
            fail_body(app, callback, ChordError(f"Dependency {member.id} raised {failure!r}"))
            return
    values = members.join(propagate=False, disable_sync_subtasks=False)
    callback.apply_async((values,))
