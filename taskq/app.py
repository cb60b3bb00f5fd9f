"""Taskq: the app. Holds the config, the task registry, the publisher and the backend.

The ``@app.task`` decorator only registers; the broker connection and the result backend
are made on first use, so importing a tasks module never does I/O.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from kombu import Queue

from . import shared
from .amqp import Amqp
from .backends import Backend
from .builtins import register_builtins
from .calling import CallOptions, build_message, expiration_seconds
from .clients import make_amqp, make_backend
from .config import Config
from .context import Context, TaskStack
from .control import Control
from .events import EventDispatcher, client_hostname, send_task_sent
from .exceptions import ConfigurationError, NotRegistered
from .loader import Discovery, Packages, import_task_modules, settings_from
from .options import BoundTaskDecorator, TaskDecorator, TaskOptions
from .queues import declared_queues, default_queue
from .result import AsyncResult, GroupResult, bind_group_result
from .serializers import check_conf, check_signing, serializer_name
from .signals import Signal
from .task import Task

if TYPE_CHECKING:
    from .beat import Entry
    from .security import Security
    from .signature import Signature

P = ParamSpec("P")
R = TypeVar("R")


class TaskRegistry(dict[str, Task[Any, Any]]):
    """Task name -> Task. A missing name raises ``NotRegistered`` naming the known ones."""

    def __missing__(self, name: str) -> Task[Any, Any]:
        known = ", ".join(sorted(self)) or "none"
        raise NotRegistered(f"Task {name!r} is not registered (registered: {known}).")


class Taskq:
    """A taskq application: ``Taskq("proj", broker="redis://...", backend="redis://...")``.

    With no broker URL the embedded SQLite broker and result store are used, with files
    under ``embedded_data_dir`` (default ``~/.local/share/taskq/<main>``).
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        *,
        include: Iterable[str] | None = None,
        set_as_current: bool = True,
        task_cls: type[Task[Any, Any]] = Task,
        **settings: Any,
    ):
        self.main = main or "__main__"
        self.conf = Config(**settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        if include is not None:
            self.conf.include = tuple(include)
        self.tasks = TaskRegistry()
        # The class of the app's tasks: subclass it (class MyTask(app.Task)) for base=.
        self.Task: type[Task[Any, Any]] = task_cls
        self.discoveries: list[Discovery] = []
        self._amqp: Amqp | None = None
        self._backend: Backend | None = None
        self._lock = threading.RLock()
        self._stack = TaskStack()
        self._oid: tuple[int, str] | None = None
        self.security: Security | None = None  # set by setup_security()
        # Celery's app signals: sent once each, by finalize (a worker or beat at start).
        self.on_after_configure = Signal("on_after_configure", ("source",))
        self.on_after_finalize = Signal("on_after_finalize")
        self._finalized = False
        self.periodic_tasks: list[Entry] = []  # add_periodic_task's, beside beat_schedule
        register_builtins(self)
        shared.adopt(self, set_as_current)

    def __repr__(self) -> str:
        return f"<Taskq {self.main}>"

    # -- configuration
    def config_from_object(
        self, obj: object | str, *, namespace: str | None = None, silent: bool = False
    ) -> None:
        """Load settings from a module or its name, ``"module:attr"``, a class or a mapping.

        ``namespace="CELERY"`` reads only ``CELERY_``-prefixed names, as a Django project
        keeps them: ``app.config_from_object("django.conf:settings", namespace="CELERY")``.
        ``silent`` ignores a source that cannot be imported (not a bad setting in it).
        """
        try:
            found = settings_from(obj, namespace)
        except (ConfigurationError, ImportError):
            if silent:
                return
            raise
        self.conf.update(found)
        self._reset_clients()

    def config_from_envvar(self, variable_name: str, *, silent: bool = False) -> None:
        """``config_from_object`` of the module the environment variable names."""
        spec = os.environ.get(variable_name)
        if not spec:
            if silent:
                return
            raise ConfigurationError(
                f"The environment variable {variable_name} is not set: it should name the "
                "config module (for example proj.taskqconfig)."
            )
        self.config_from_object(spec, silent=silent)

    def set_default(self) -> None:
        """Make this the app that shared tasks act for (``taskq.current_app()``)."""
        shared.set_default(self)

    def setup_security(
        self,
        allowed_serializers: Iterable[str] | None = None,
        key: str | None = None,
        key_password: str | bytes | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Sign task messages, and run only signed ones (Celery's ``auth`` serializer).

        ``key``, ``key_password``, ``cert``, ``store`` and ``digest`` default to the
        ``security_*`` settings. From now on this app's client signs every task message
        (``serializer`` inside, JSON by default) and its worker takes only signed messages
        whose body decodes with one of ``allowed_serializers`` (default ``["json"]``):
        ``task_serializer`` becomes ``"auth"`` and ``accept_content`` ``["auth"]``, the
        settings Celery asks for. Unlike Celery's, ``digest`` left unset reads
        ``security_digest`` (Celery's default argument hides that setting).
        """
        from . import security  # needs cryptography: only projects that sign import it

        self.security = security.setup(
            self, allowed_serializers, key, key_password, cert, store, digest, serializer
        )
        self._reset_clients()

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Send ``sig`` on ``schedule`` (seconds, a timedelta, ``crontab(...)``), as Celery's.

        Usually from an ``on_after_configure`` receiver; ``taskq beat`` reads these with
        ``beat_schedule``. Returns the entry's name (``name``, else the signature's repr).
        """
        from .beat import periodic_entry  # the scheduler's, loaded by apps that use it

        entry = periodic_entry(schedule, sig, args, kwargs, name, options)
        self.periodic_tasks = [e for e in self.periodic_tasks if e.name != entry.name]
        self.periodic_tasks.append(entry)
        return entry.name

    # -- where the tasks are
    def autodiscover_tasks(
        self,
        packages: Packages | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Find ``<package>.tasks`` in each package (by default Django's installed apps).

        The worker imports them at start; ``force=True`` imports them now. ``packages``
        may be a callable, so a Django project's apps are listed once Django is ready.
        """
        discovery = Discovery(packages, related_name)
        self.discoveries.append(discovery)
        if force:
            import_task_modules(self, [discovery])

    def finalize(self) -> None:
        """Send ``on_after_configure`` then ``on_after_finalize``, once (worker, beat start)."""
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def import_task_modules(self) -> list[str]:
        """Import the ``imports``/``include`` modules and the discovered ones (worker start)."""
        return import_task_modules(self, self.discoveries)

    @property
    def broker_url(self) -> str:
        url: str | None = self.conf.broker_url
        return url or f"sqlite:///{self.data_dir() / 'broker.sqlite3'}"

    @property
    def backend_url(self) -> str | None:
        url: str | None = self.conf.result_backend
        if url:
            return url
        if not self.conf.broker_url:
            # Embedded default: results live beside the embedded broker.
            return f"sqlite:///{self.data_dir() / 'results.sqlite3'}"
        return None

    def data_dir(self) -> Path:
        configured = self.conf.embedded_data_dir
        if configured:
            return Path(configured).expanduser().resolve()
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(base) / "taskq" / self.main

    # -- the registry
    @overload
    def task(self, fun: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fun: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fun: None = None,
        /,
        *,
        bind: Literal[True],
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        **options: Any,
    ) -> BoundTaskDecorator: ...

    @overload
    def task(
        self,
        fun: None = None,
        /,
        *,
        bind: Literal[False] = False,
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(
        self,
        fun: Any = None,
        /,
        *,
        name: str | None = None,
        base: type[Task[Any, Any]] | None = None,
        **options: Any,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``.

        ``base=`` a ``Task`` subclass: its option attributes are defaults, its handlers
        run around each run (``app.Task`` is the class used when none is given).
        """
        cls = self.Task if base is None else base
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigurationError(f"base={cls!r} is not a subclass of taskq.Task")

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            try:
                task_options = TaskOptions(**{**cls._class_options, **options})
            except TypeError:
                bad = sorted(set(options) - set(TaskOptions.__dataclass_fields__))
                raise ConfigurationError(
                    f"Unknown task option(s) {', '.join(bad)} for {f.__qualname__}; valid "
                    f"options: name, base, {', '.join(TaskOptions.__dataclass_fields__)}"
                ) from None
            if task_options.max_deliveries is not None and task_options.max_deliveries < 1:
                raise ConfigurationError(
                    f"Task {f.__qualname__}: max_deliveries must be at least 1 (or None for "
                    f"no limit), not {task_options.max_deliveries!r}"
                )
            if task_options.serializer is not None:
                try:
                    serializer_name(task_options.serializer)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"Task {f.__qualname__}: serializer {task_options.serializer!r}: {exc}"
                    ) from None
            task_name = name or self.gen_task_name(f)
            task: Task[Any, Any] = cls(self, f, task_name, task_options)
            self.tasks[task_name] = task
            return task

        if fun is not None:
            return register(fun)
        return register

    def register_task(self, task: Task[Any, Any] | type[Task[Any, Any]]) -> Task[Any, Any]:
        """Register a class-based task (a ``Task`` subclass with ``run``), as Celery's: the
        instance (or the class, made here) is bound to this app; named by its class's
        ``name`` attribute, else ``<module>.<ClassName>``."""
        if isinstance(task, type):
            task = task()
        if not isinstance(task, Task):
            raise ConfigurationError(f"register_task takes a taskq.Task, not {task!r}")
        task.app = self
        if not task.name:
            task.name = f"{type(task).__module__}.{type(task).__name__}"
        self.tasks[task.name] = task
        return task

    def gen_task_name(self, fun: Callable[..., Any]) -> str:
        module = fun.__module__
        if module == "__main__":
            module = self.main
        return f"{module}.{fun.__name__}"

    # -- clients, made on first use
    @property
    def amqp(self) -> Amqp:
        with self._lock:
            if self._amqp is None:
                self._amqp = self._make_amqp()
            return self._amqp

    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                self._backend = make_backend(self)
            return self._backend

    def _make_amqp(self) -> Amqp:
        check_conf(self.conf)  # pickle only with accept_content naming it; msgpack installed
        self.check_signing()
        return make_amqp(self)

    def check_signing(self) -> None:
        """``auth`` in the serializer settings needs ``setup_security()`` first."""
        check_signing(self.conf, self.security is not None)

    def declared_queues(self) -> tuple[Queue, ...]:
        """``task_queues`` as kombu queues (taskq/queues.py says how)."""
        return declared_queues(self.conf)

    def default_queue(self) -> Queue:
        return default_queue(self.conf, self.declared_queues())

    def connection(self) -> Any:
        """A new kombu connection to the broker (not pooled)."""
        return self.amqp.connection()

    def _reset_clients(self) -> None:
        with self._lock:
            if self._amqp is not None:
                self._amqp.close()
            if self._backend is not None:
                self._backend.close()
            self._amqp = self._backend = None

    def close(self) -> None:
        """Release broker and backend connections."""
        self._reset_clients()

    def forget_clients(self) -> None:
        """Drop connections without closing them (in a forked child they are the parent's)."""
        # A fresh lock too: another thread may have held this one at the fork.
        self._lock = threading.RLock()
        self._amqp = self._backend = None

    # -- calling
    def send_task(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name; the task need not be registered in this app."""
        task: Task[Any, Any] | None = options.pop("_task", None)
        if task is None:
            task = self.tasks.get(name)
        call = CallOptions.parse(options)
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        if task is not None:
            task.check_arguments(args, kwargs)
        parent = self.current_context()
        msg = build_message(name, args, kwargs, call, task, parent)
        if parent is not None and call.add_to_parent:
            self._add_child(msg.id)
        route = self.amqp.router.route(
            name, task.options.queue if task else None, call.routing_options(), args, kwargs
        )
        priority = call.priority
        if priority is None and task is not None:
            priority = task.options.priority
        serializer = call.serializer or (task.options.serializer if task is not None else None)
        reply_to = call.reply_to or self.oid
        if parent is None and (self.backend_url or "").startswith("rpc"):
            # rpc:// needs the reply queue before the task; a task's own sends skip it, as
            # Celery's do (nobody waits on them in a worker).
            self.backend.on_task_call(reply_to)
        self.amqp.publish(
            msg,
            route,
            priority=priority,
            expiration=expiration_seconds(msg.expires),
            reply_to=reply_to,
            retry=call.retry,
            retry_policy=call.retry_policy,
            compression=call.compression,
            serializer=serializer,
        )
        if self.conf.task_send_sent_event:
            send_task_sent(self, self._sent_events, msg, route)
        return AsyncResult(msg.id, app=self)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        return AsyncResult(task_id, app=self)

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of the workers: ``app.control.inspect().active()``, ``.revoke(id)``."""
        return Control(self)

    @functools.cached_property
    def _sent_events(self) -> EventDispatcher:
        return EventDispatcher(self, client_hostname())

    @functools.cached_property
    def GroupResult(self) -> type[GroupResult]:
        """``app.GroupResult.restore(group_id)``: the class, bound to this app."""
        return bind_group_result(self)

    @property
    def oid(self) -> str:
        """This process's reply-to id (Celery puts one on every message)."""
        pid = os.getpid()
        if self._oid is None or self._oid[0] != pid:
            self._oid = (
                pid,
                str(uuid.uuid3(uuid.NAMESPACE_OID, f"{uuid.getnode()}-{pid}-{id(self)}")),
            )
        return self._oid[1]

    # -- the task running in this thread, so tasks it sends get parent_id/root_id
    def push_context(self, context: Context) -> None:
        self._stack.push(context)

    def pop_context(self) -> list[str]:
        """Leave the task's context; returns the ids of the tasks it sent (its children)."""
        return self._stack.pop()

    def current_context(self) -> Context | None:
        return self._stack.current()

    def current_children(self) -> list[str]:
        """The ids of the tasks the running task has sent so far."""
        return self._stack.children()

    def _add_child(self, task_id: str) -> None:
        self._stack.add_child(task_id)


__all__ = ["TaskRegistry", "Taskq"]
