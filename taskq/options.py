"""Task options and the decorator's types: what ``@app.task(...)`` takes and returns."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from .task import Task

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskOptions:
    """Per-task options given to ``@app.task(...)``; None means "use the app's setting"."""

    bind: bool = False
    queue: str | None = None
    ignore_result: bool | None = None
    acks_late: bool | None = None
    reject_on_worker_lost: bool | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180.0
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    serializer: str | None = None
    expires: float | datetime | None = None
    priority: int | None = None
    track_started: bool | None = None
    max_deliveries: int | None = None


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns, for type checkers: an ``async def`` task's result
    is what its coroutine returns."""

    @overload
    def __call__(self, fun: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fun: Callable[P, R], /) -> Task[P, R]: ...


class BoundTaskDecorator(Protocol):
    """``@app.task(bind=True, ...)``: the function's first parameter is the task."""

    @overload
    def __call__(
        self, fun: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...

    @overload
    def __call__(self, fun: Callable[Concatenate[Any, P], R], /) -> Task[P, R]: ...
