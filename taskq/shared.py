"""Shared tasks and the default app: what a reusable module (a Django app) declares tasks with.

``@shared_task`` registers a function on every app, those made before and after it, so a
library's tasks need no app of their own. The object it returns is a stand-in that acts
as the task of the *default app*: the app last made (or the one ``app.set_default()``
chose), looked up on each use, so a module can be imported before any app exists.

The default app is the one process-wide value of this module, Celery's ``current_app``;
nothing else reads it. An app registers itself here when made (``adopt``), unless it was
made with ``set_as_current=False``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import Taskq
    from .options import BoundTaskDecorator, TaskDecorator
    from .task import Task

P = ParamSpec("P")
R = TypeVar("R")


class _Registry:
    """The shared task declarations, every live app, and which of them is the default."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.declared: list[tuple[Callable[..., Any], dict[str, Any]]] = []
        self.apps: weakref.WeakSet[Taskq] = weakref.WeakSet()
        self.default: weakref.ref[Taskq] | None = None


_registry = _Registry()


def adopt(app: Taskq, set_as_current: bool = True) -> None:
    """A new app gets every shared task declared so far, and becomes the default."""
    with _registry.lock:
        _registry.apps.add(app)
        declared = list(_registry.declared)
        if set_as_current:
            _registry.default = weakref.ref(app)
    for fun, options in declared:
        _register(app, fun, options)


def _register(app: Taskq, fun: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
    make: Callable[[Callable[..., Any]], Task[Any, Any]] = app.task(**options)
    return make(fun)


def set_default(app: Taskq) -> None:
    with _registry.lock:
        _registry.default = weakref.ref(app)


def default_app() -> Taskq | None:
    """The default app, or None when there is none (``current_app`` raises instead)."""
    ref = _registry.default
    return ref() if ref is not None else None


def restore_default(app: Taskq | None) -> None:
    """Make ``app`` (from ``default_app``) the default again, or none at all."""
    with _registry.lock:
        _registry.default = weakref.ref(app) if app is not None else None


def current_app() -> Taskq:
    """The default app: the one last made, or last given to ``set_default``."""
    ref = _registry.default
    app = ref() if ref is not None else None
    if app is None:
        raise ConfigurationError(
            "No taskq app exists yet: make one (Taskq('proj', broker=...)) before a shared "
            "task is called; a Django project does so in proj/taskq.py, imported by "
            "proj/__init__.py."
        )
    return app


class SharedTask:
    """The task of the default app, named after the function; every attribute is that task's."""

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any]):
        self._fun = fun
        self._options = options
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", "task")
        self.__module__ = getattr(fun, "__module__", __name__)
        # The name an app gives it (an app names a task of __main__ after itself instead).
        self.name: str = options.get("name") or f"{self.__module__}.{self.__name__}"

    def _task(self) -> Task[Any, Any]:
        app = current_app()
        name = self._options.get("name") or app.gen_task_name(self._fun)
        task = app.tasks.get(name)
        if task is None:  # the default app was made with set_as_current=False before us
            task = _register(app, self._fun, self._options)
        return task

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._task(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<shared task {self._options.get('name') or self.__name__}>"


@overload
def shared_task(fun: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...


@overload
def shared_task(fun: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(
    fun: None = None, /, *, bind: Literal[True], **options: Any
) -> BoundTaskDecorator: ...


@overload
def shared_task(
    fun: None = None, /, *, bind: Literal[False] = False, **options: Any
) -> TaskDecorator: ...


def shared_task(fun: Any = None, /, **options: Any) -> Any:
    """``@shared_task`` / ``@shared_task(bind=True, ...)``: a task on every app.

    Takes the options of ``@app.task``. What it returns acts as the task of the default
    app (typed as a ``Task``): ``add.delay(2, 2)`` sends through that app.
    """

    def declare(f: Callable[..., Any]) -> Any:
        with _registry.lock:
            _registry.declared.append((f, dict(options)))
            apps = list(_registry.apps)
        for app in apps:
            _register(app, f, options)
        return SharedTask(f, dict(options))

    return declare(fun) if fun is not None else declare


__all__ = ["SharedTask", "adopt", "current_app", "set_default", "shared_task"]
