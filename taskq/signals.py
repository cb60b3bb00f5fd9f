"""Signals: Celery's hooks into the life of tasks, workers and the app, by Celery's names.

Where a project sets up database sessions, Sentry, tracing or metrics::

    from taskq.signals import task_prerun, worker_process_init

    @worker_process_init.connect
    def open_db(**kwargs): ...

    @task_prerun.connect(sender="proj.tasks.add")   # only for that task
    def before_add(sender, task_id, task, args, kwargs, **rest): ...

A receiver takes the signal's arguments by name and ``**kwargs`` (more may be added, as
in Celery). What a receiver raises is logged and returned by ``send``, never raised into
the task or the worker, so a broken hook cannot lose a task. Receivers are held weakly by
default, as Celery's are: a function defined inside another one needs ``weak=False``.

A task sender (a task object or a shared task) matches by task name, so
``sender="proj.tasks.add"`` and ``sender=add`` are the same filter.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .shared import SharedTask

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_ANY = object()  # the key of receivers that take every sender


def _sender_key(sender: Any) -> Any:
    if sender is None:
        return _ANY
    if isinstance(sender, str):
        return sender
    if isinstance(sender, SharedTask) or hasattr(type(sender), "apply_async"):
        return sender.name  # a task, or a shared task standing for one
    return id(sender)


def _reference(receiver: Callable[..., Any], weak: bool) -> Callable[[], Any]:
    if not weak:
        return lambda: receiver
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return weakref.WeakMethod(receiver)  # a bound method: the object may go away
    return weakref.ref(receiver)


class Signal:
    """One signal: ``connect`` receivers (also as a decorator), ``send`` to them."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()):
        self.name = name
        self.providing_args = providing_args
        self._lock = threading.Lock()
        # (key of the receiver, key of the sender) -> a reference to the receiver
        self._receivers: dict[tuple[Any, Any], Callable[[], Any]] = {}

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @overload
    def connect(self, receiver: F, /) -> F: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        /,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
    ) -> Callable[[F], F]: ...

    def connect(
        self,
        receiver: Any = None,
        /,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
    ) -> Any:
        """``@signal.connect`` or ``@signal.connect(sender=..., weak=..., dispatch_uid=...)``.

        ``dispatch_uid`` names a receiver, so connecting again under it replaces it
        (a module imported twice does not run its receiver twice).
        """

        def add(fun: F) -> F:
            if not callable(fun):
                raise TypeError(f"{self.name}: a receiver must be callable, not {fun!r}")
            key = (dispatch_uid or _receiver_id(fun), _sender_key(sender))
            with self._lock:
                self._receivers[key] = _reference(fun, weak)
            return fun

        return add(receiver) if receiver is not None else add

    def disconnect(
        self, receiver: Callable[..., Any] | None = None, *, sender: Any = None,
        dispatch_uid: str | None = None,
    ) -> bool:  # fmt: skip
        """Remove a receiver; whether it was connected."""
        if receiver is None and dispatch_uid is None:
            raise TypeError(f"{self.name}.disconnect: give the receiver or its dispatch_uid")
        key = (dispatch_uid or _receiver_id(receiver), _sender_key(sender))
        with self._lock:
            return self._receivers.pop(key, None) is not None

    @property
    def receivers(self) -> bool:
        """Whether anything is connected: senders skip building arguments when not."""
        return bool(self._receivers)

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call each live receiver for this sender; ``[(receiver, its return or error)]``."""
        if not self._receivers:
            return []
        wanted = (_ANY, _sender_key(sender))
        responses = []
        for receiver in self._live(wanted):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                logger.exception("Signal %s: receiver %r raised %r", self.name, receiver, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    def _live(self, wanted: tuple[Any, Any]) -> list[Callable[..., Any]]:
        live, dead = [], []
        with self._lock:
            items = list(self._receivers.items())
        for key, ref in items:
            if key[1] not in wanted:
                continue
            receiver = ref()
            if receiver is None:
                dead.append(key)
            else:
                live.append(receiver)
        if dead:
            with self._lock:
                for key in dead:
                    self._receivers.pop(key, None)
        return live


def _receiver_id(receiver: Any) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


# -- the client
before_task_publish = Signal(
    "before_task_publish",
    ("body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
)
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key"))

# -- a task's run, in the process that runs it (sender: the task)
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal(
    "task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo")
)
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_rejected = Signal("task_rejected", ("message", "exc"))
task_unknown = Signal("task_unknown", ("message", "exc", "name", "id"))

# -- the worker
celeryd_init = Signal("celeryd_init", ("instance", "conf", "options"))
celeryd_after_setup = Signal("celeryd_after_setup", ("instance", "conf"))
import_modules = Signal("import_modules")
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
worker_shutting_down = Signal("worker_shutting_down", ("sig", "how", "exitcode"))
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")

# -- logging
setup_logging = Signal("setup_logging", ("loglevel", "logfile", "format", "colorize"))
after_setup_logger = Signal(
    "after_setup_logger", ("logger", "loglevel", "logfile", "format", "colorize")
)
after_setup_task_logger = Signal(
    "after_setup_task_logger", ("logger", "loglevel", "logfile", "format", "colorize")
)

# -- the scheduler
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
