"""Task: a registered function that runs locally when called and remotely when sent."""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NoReturn,
    ParamSpec,
    TypeVar,
)

from . import states
from .aio import run_coroutine
from .backends.base import ResultContext
from .context import Context
from .exceptions import ConfigurationError, ExceptionInfo, Ignore, MaxRetriesExceededError, Retry
from .options import TaskOptions
from .signature import Signature

if TYPE_CHECKING:
    from .app import Taskq
    from .canvas import chunks, xmap, xstarmap
    from .result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


OPTION_NAMES = frozenset(TaskOptions.__dataclass_fields__)
HOOK_NAMES = ("before_start", "on_success", "on_retry", "on_failure", "after_return")


class Task(Generic[P, R]):
    """A task bound to one app. Calling it runs the function here; ``delay`` sends it.

    Subclass it to share options and handlers between tasks, as with Celery's ``Task``:
    class attributes named like options (``max_retries = 5``, ``autoretry_for = (...)``)
    are the defaults of every task made with ``@app.task(base=MyTask)``; the decorator's
    own options win. The handlers (``on_failure`` and the rest) run where the task runs.
    """

    _class_options: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Option attributes become the class's option defaults, and leave the class, so
        # that reading them (task.max_retries) always gives the task's own value.
        own = {
            name: value
            for name, value in vars(cls).items()
            if name in OPTION_NAMES and not isinstance(value, property | functools.cached_property)
        }
        for name in own:
            delattr(cls, name)
        cls._class_options = {**cls._class_options, **own}

    def __init__(
        self,
        app: Taskq | None = None,
        fun: Callable[..., R] | None = None,
        name: str | None = None,
        options: TaskOptions | None = None,
    ):
        cls = type(self)
        if fun is None:
            # Celery's class-based task: a subclass with run(), registered with
            # app.register_task(MyTask()).
            if cls.run is Task.run:
                raise TypeError(f"{cls.__name__}: a task needs a function, or a run() method")
            fun = self.run
        self._app = app
        self.fun = fun
        self.name: str = name or getattr(cls, "name", None) or ""
        self.options = options if options is not None else TaskOptions(**cls._class_options)
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun
        # The handlers this class defines: the tracer calls none of the others.
        self.hooks = frozenset(h for h in HOOK_NAMES if getattr(cls, h) is not getattr(Task, h))
        # async def: a worker runs it to completion on its process's event loop.
        self.is_async = inspect.iscoroutinefunction(fun)

    # -- handlers, Celery's names and arguments; run where the task runs (taskq/hooks.py)
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Before the function runs; raising here fails the task."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        """After the task succeeded and its result was stored."""

    def on_retry(
        self, exc: BaseException | None, task_id: str, args: tuple[Any, ...],
        kwargs: Mapping[str, Any], einfo: ExceptionInfo,
    ) -> None:  # fmt: skip
        """After the task asked to be retried (``exc``: why, if it said)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...],
        kwargs: Mapping[str, Any], einfo: ExceptionInfo,
    ) -> None:  # fmt: skip
        """After the task failed and its failure was stored."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: tuple[Any, ...],
        kwargs: Mapping[str, Any], einfo: ExceptionInfo | None,
    ) -> None:  # fmt: skip
        """After a success or a failure (not a retry), the last handler of a run."""

    @property
    def app(self) -> Taskq:
        app = self._app
        if app is None:
            raise ConfigurationError(
                f"Task {self.name or type(self).__name__} is not registered with an app: "
                "app.register_task(task)"
            )
        return app

    @app.setter
    def app(self, app: Taskq) -> None:
        self._app = app

    # -- options, read through so a Celery user finds them where they expect
    @property
    def max_retries(self) -> int | None:
        return self.options.max_retries

    @property
    def default_retry_delay(self) -> float:
        return self.options.default_retry_delay

    @property
    def acks_late(self) -> bool:
        late = self.options.acks_late
        return bool(self.app.conf.task_acks_late if late is None else late)

    @property
    def ignore_result(self) -> bool:
        value = self.options.ignore_result
        return bool(self.app.conf.task_ignore_result if value is None else value)

    @property
    def request(self) -> Context:
        """The call being run in this thread, when it is a run of this task."""
        context = self.app.current_context()
        # Another task calling this one as a plain function does not lend it its context.
        return context if context is not None and context.task == self.name else Context()

    @functools.cached_property
    def _signature(self) -> inspect.Signature | None:
        try:
            return inspect.signature(self.fun)
        except (TypeError, ValueError):
            return None  # a builtin or C function: nothing to check against

    @functools.cached_property
    def _plain_arity(self) -> tuple[int, int] | None:
        """(fewest, most) positional arguments, when every parameter is a plain one."""
        sig = self._signature
        if sig is None:
            return None
        params = list(sig.parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if any(p.kind not in plain for p in params):
            return None
        skip = 1 if self.options.bind else 0
        required = sum(p.default is p.empty for p in params)
        return required - skip, len(params) - skip

    @functools.cached_property
    def takes_request(self) -> bool:
        """As an errback, whether it is called in place with ``(request, exc, traceback)``
        (a function of more than one argument, Celery's rule) rather than sent the id."""
        sig = self._signature
        if sig is None:
            return False
        params = list(sig.parameters.values())[1 if self.options.bind else 0 :]
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            return True
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return sum(p.kind in positional for p in params) > 1

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError now, in the caller, if the function cannot take these arguments."""
        arity = self._plain_arity
        # The common call needs no binding (a tenth of delay()'s own time).
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            return
        sig = self._signature
        if sig is None:
            return
        try:
            sig.bind(*((None, *args) if self.options.bind else args), **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}{sig}: {exc}") from None

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"

    # -- calling
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.options.bind:
            return self.fun(self, *args, **kwargs)
        return self.fun(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> R:
        return self(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task to a worker. Options as Celery's: countdown, eta, expires, queue,
        exchange, routing_key, priority, headers, serializer, compression, task_id, link,
        link_error, ignore_result, retry, retry_policy, time_limit, soft_time_limit."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.app.send_task(
            self.name, tuple(args or ()), dict(kwargs or {}), _task=self, **options
        )

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now, retries included, and return a finished result.

        Handlers and signals run as a worker would run them (taskq/eager.py).
        """
        from .eager import apply_here

        return apply_here(self, args, kwargs, options)

    def call_with_autoretry(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
        if not self.options.autoretry_for:
            return self._run(args, kwargs)
        try:
            return self._run(args, kwargs)
        except Retry:
            raise
        except self.options.autoretry_for as exc:
            countdown = self.backoff_countdown(self.request.retries)
            retry_kwargs = dict(self.options.retry_kwargs)
            if countdown is not None:
                retry_kwargs.setdefault("countdown", countdown)
            raise self.retry(exc=exc, **retry_kwargs) from None

    def _run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
        """The function's value; a coroutine function's run to completion (taskq/aio.py)."""
        if not self.is_async:
            return self(*args, **kwargs)
        return run_coroutine(lambda: self(*args, **kwargs), self.app)  # type: ignore[arg-type, return-value]

    def backoff_countdown(self, retries: int) -> float | None:
        factor = self.options.retry_backoff
        if not factor:
            return None
        scale = 1.0 if factor is True else float(factor)
        countdown = min(self.options.retry_backoff_max, scale * (2.0**retries))
        if self.options.retry_jitter:
            # Full jitter spreads a burst of failing tasks over the whole window.
            countdown = random.uniform(0, countdown)
        return max(0.0, countdown)

    # -- signatures
    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name, tuple(args), dict(kwargs), app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name, tuple(args), dict(kwargs), immutable=True, app=self.app)

    def signature(
        self, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        return Signature(self.name, tuple(args), dict(kwargs or {}), options, app=self.app)

    def map(self, it: Iterable[Any]) -> xmap:
        """One message: this task called on each item, in the worker that gets it."""
        from .canvas import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> xstarmap:
        from .canvas import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> chunks:
        """The items in parts of ``n``, each part one message (a group of starmaps)."""
        from .canvas import chunks

        return chunks(self.s(), it, n, app=self.app)

    # -- inside a running task
    def replace(self, sig: Signature) -> NoReturn:
        """End this run and let ``sig`` take its place: same task id, same chain, chord
        and callbacks, so whoever waits for this task gets ``sig``'s result. A group is
        joined first (its list of values becomes the result)."""
        from .canvas import chain, group

        request = self.request
        if request.called_directly or request.id is None:
            raise RuntimeError(f"{self.name}.replace() called outside a task run")
        if sig.options.get("chord"):
            raise ConfigurationError("a signature replacing a task must not be part of a chord")
        if isinstance(sig, chain) and not sig.tasks:
            raise ConfigurationError("cannot replace a task with an empty chain")
        if isinstance(sig, group):
            sig = sig | self.app.tasks["celery.accumulate"].s(index=0)
        for data in request.callbacks:
            sig.link(Signature.from_dict(data, self.app))
        for data in request.errbacks:
            sig.link_error(Signature.from_dict(data, self.app))
        sig.freeze(request.id)
        nesting = request.replaced_task_nesting + 1
        sig.set(chord=request.chord, group_id=request.group, group_index=request.group_index,
                root_id=request.root_id, replaced_task_nesting=nesting)  # fmt: skip
        if request.chain:
            rest = [Signature.from_dict(t, self.app) for t in reversed(request.chain)]
            sig = chain(sig, *rest, app=self.app)
        sig.apply_async(add_to_parent=False)
        raise Ignore("Replaced by new task")

    def retry(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this task again and return ``Retry`` to raise; re-raise ``exc`` when the
        retries have run out (``MaxRetriesExceededError`` when there is no ``exc``)."""
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise RuntimeError(f"{self.name}.retry() called outside a task run")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{dict(request.kwargs)}"
            )
        when: float | datetime
        if eta is None:
            when = self.default_retry_delay if countdown is None else countdown
            eta = datetime.now(UTC) + timedelta(seconds=when)
        else:
            when = eta
        retry = Retry(exc=exc, when=when)
        if not request.is_eager:
            self._send_retry(request, args, kwargs, eta, options)
        if throw:
            raise retry
        return retry

    def _send_retry(
        self,
        request: Context,
        args: tuple[Any, ...] | None,
        kwargs: Mapping[str, Any] | None,
        eta: datetime,
        options: Mapping[str, Any],
    ) -> None:
        hard, soft = request.timelimit
        self.app.send_task(
            self.name,
            tuple(request.args if args is None else args),
            dict(request.kwargs if kwargs is None else kwargs),
            _task=self,
            task_id=request.id,
            retries=request.retries + 1,
            eta=eta,
            expires=request.expires,
            root_id=request.root_id,
            parent_id=request.id,
            group_id=request.group,
            group_index=request.group_index,
            link=list(request.callbacks),
            link_error=list(request.errbacks),
            chain=list(request.chain),
            chord=request.chord,
            time_limit=hard,
            soft_time_limit=soft,
            origin=request.origin,
            reply_to=request.reply_to,
            add_to_parent=False,
            **{**_same_route(request.delivery_info), **options},
        )

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None
    ) -> None:
        """Store a custom state (e.g. PROGRESS) for this task or another."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise RuntimeError("update_state() needs a task_id outside a task run")
        # The caller's reply queue, for rpc:// results (Celery passes this request too).
        reply_to = self.request.reply_to
        context = ResultContext(reply_to=reply_to) if reply_to else None
        self.app.backend.store_result(task_id, meta, state or states.PENDING, None, context)

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        from .result import AsyncResult

        return AsyncResult(task_id, app=self.app)


def _same_route(delivery: Mapping[str, Any]) -> dict[str, Any]:
    """Routing options that send a retry where the original message came from."""
    exchange, key = delivery.get("exchange"), delivery.get("routing_key")
    if exchange:
        return {"exchange": exchange, "routing_key": key}
    # The default (nameless) exchange routes by queue name: the key *is* the queue.
    return {"queue": key} if key else {}
