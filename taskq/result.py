"""AsyncResult: a handle on a task's state and return value in the result backend.

``ResultSet`` and ``GroupResult`` (many results as one) live in ``result_set.py`` and are
importable from here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from . import states
from .backends import Backend, decode_exception
from .exceptions import BackendError, TimeoutError

if TYPE_CHECKING:
    from .app import Taskq
    from .result_set import GroupResult

R = TypeVar("R")

# Celery's serialised form of a result, as stored in a meta's "children" and in a saved
# group: ((id, parent's tuple or None), None) for a task, ((id, parent), [members]) for a
# group. JSON turns the tuples into lists.
ResultTuple: TypeAlias = "tuple[tuple[str, ResultTuple | None], list[ResultTuple] | None]"

# How often a wait with parents looks at them (at least): a parent that failed ends the
# wait within about this long.
PARENT_CHECK_MIN = 0.05
AWAIT_SLICE = 1.0  # seconds an awaited result waits in a thread before looking again


def refuse_wait_in_task(app: Taskq | None) -> None:
    """Raise RuntimeError when called from a task that a worker is running.

    A task that waits for another can hold the pool slot the other one needs: with every
    slot waiting, nothing runs. Celery refuses the same way (``disable_sync_subtasks``).
    """
    context = app.current_context() if app is not None else None
    if context is not None and not context.is_eager:
        raise RuntimeError(
            "Never wait for a result inside a task: it can deadlock the worker. Chain the "
            "tasks instead, or pass disable_sync_subtasks=False if you accept the risk."
        )


class AsyncResult(Generic[R]):
    """``AsyncResult(id, app=app)``. An id the backend has never seen is PENDING.

    ``parent`` is the result of the task (or group) before this one in a chain; ``get()``
    raises a failed parent's exception instead of waiting for a task that will never run.
    """

    def __init__(
        self,
        id: str,
        app: Taskq | None = None,
        backend: Backend | None = None,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ):
        if app is None and backend is None:
            raise TypeError("AsyncResult needs app= (or backend=)")
        self.id = id
        self.app = app
        self.parent = parent
        self._backend = backend
        self._cache: Mapping[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            assert self.app is not None
            self._backend = self.app.backend
        return self._backend

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return self.id == other.id
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def _meta(self) -> Mapping[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        self._remember(meta)
        return meta

    def _remember(self, meta: Mapping[str, Any]) -> None:
        """Keep ``meta`` if it is final: a ready state never changes, no need to ask again."""
        if meta["status"] in states.READY_STATES:
            self._cache = meta

    @property
    def state(self) -> str:
        return str(self._meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE/RETRY/REVOKED."""
        return self._value(self._meta())

    info = result

    @property
    def traceback(self) -> str | None:
        tb = self._meta().get("traceback")
        return str(tb) if tb is not None else None

    @property
    def date_done(self) -> datetime | None:
        """When the task finished (timezone-aware, UTC when stored without a zone)."""
        return _parse_date(self.id, self._meta().get("date_done"))

    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult] | None:
        """Results of the tasks this task sent while it ran; None while nothing is stored."""
        meta = self._meta()
        stored = meta.get("children")
        if meta["status"] == states.PENDING or stored is None:
            return None
        return [result_from_tuple(child, self.app, self._backend) for child in stored]

    # Extended results (result_extended): None when the worker did not store them.
    @property
    def name(self) -> str | None:
        return self._meta().get("name")

    @property
    def args(self) -> list[Any] | None:
        return self._meta().get("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        return self._meta().get("kwargs")

    @property
    def worker(self) -> str | None:
        return self._meta().get("worker")

    @property
    def queue(self) -> str | None:
        return self._meta().get("queue")

    @property
    def retries(self) -> int | None:
        return self._meta().get("retries")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def maybe_throw(self, propagate: bool = True) -> None:
        """Raise the task's exception if it failed or was revoked (no waiting)."""
        meta = self._meta()
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise self._value(meta)

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        follow_parents: bool = True,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task to finish and return its value.

        Raises the task's exception (rebuilt when its class is already importable here, else
        ``RemoteError``) when it failed and ``propagate`` is true, ``taskq.TimeoutError`` after
        ``timeout`` seconds, and ``NoBackendConfigured`` when results are disabled. With
        ``follow_parents`` (and ``propagate``), a parent that failed or was revoked raises
        its exception, checked before and while waiting. Inside a task run by a worker it
        raises RuntimeError unless ``disable_sync_subtasks`` is false.
        """
        if disable_sync_subtasks:
            refuse_wait_in_task(self.app)
        watch_parents = follow_parents and propagate and self.parent is not None
        if watch_parents and self._meta()["status"] not in states.READY_STATES:
            # Its own outcome, once known, says more (a chord body's ChordError names the
            # member that failed); until then a failed parent need not be waited out.
            self._raise_parent_error()
        meta = self._wait(timeout, interval, watch_parents)
        value = self._value(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise value
        return value  # type: ignore[no-any-return]

    wait = get

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R:
        """``get`` for asyncio code (``await result`` is ``await result.aget()``).

        The event loop is never blocked: the wait runs in a thread, a slice of at most a
        second at a time, so a cancelled caller stops waiting within a second.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = AWAIT_SLICE if left is None else min(AWAIT_SLICE, left)
            try:
                return await asyncio.to_thread(self.get, step, propagate, interval, True, False)
            except TimeoutError:
                if left is not None and left <= AWAIT_SLICE:
                    raise

    def __await__(self) -> Generator[Any, None, R]:
        return self.aget().__await__()

    def _wait(
        self, timeout: float | None, interval: float, watch_parents: bool
    ) -> Mapping[str, Any]:
        if self._cache is not None:
            return self._cache
        if watch_parents:
            meta = self._wait_watching_parents(timeout, interval)
        else:
            meta = self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        return meta

    def _wait_watching_parents(self, timeout: float | None, interval: float) -> Mapping[str, Any]:
        # The backend's wait cannot watch other keys, so wait in slices and look at the
        # parents between them (Celery looks at them on each poll interval).
        deadline = None if timeout is None else time.monotonic() + timeout
        period = max(interval, PARENT_CHECK_MIN)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return self.backend.wait_for(
                    self.id,
                    timeout=period if left is None else min(left, period),
                    interval=interval,
                )
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            if self._meta()["status"] not in states.READY_STATES:
                self._raise_parent_error()

    def _raise_parent_error(self) -> None:
        # Oldest first: the first failure in a chain is the cause of the ones after it.
        # A group is a parent only of a chord's body, whose own result always ends in a
        # ChordError that names the failed member: that, not the member's error, is the
        # answer (Celery's depends on which of the two it happens to see first).
        for node in reversed(list(self._parents())):
            if not isinstance(node, GroupResult):
                node.maybe_throw()

    def _parents(self) -> Iterator[AsyncResult[Any] | GroupResult]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Tell every worker never to run this task (``app.control.revoke``).

        ``terminate`` also stops it where it runs, with ``signal`` (the worker's default,
        SIGTERM, when None); ``wait`` waits up to ``timeout`` seconds (default 1) for the
        workers' replies.
        """
        if self.app is None:
            raise TypeError("revoke() goes through the broker: make the AsyncResult with app=")
        self.app.control.revoke(
            self.id,
            connection=connection,
            terminate=terminate,
            signal=signal,
            reply=wait,
            timeout=timeout,
        )

    def as_tuple(self) -> ResultTuple:
        """Celery's serialised form: ``((id, parent's tuple or None), None)``."""
        return (self.id, self.parent.as_tuple() if self.parent is not None else None), None

    def as_list(self) -> list[str]:
        """This id, then each parent's (a parent group contributes its own id)."""
        ids = [self.id]
        if self.parent is not None:
            ids.extend(self.parent.as_list())
        return ids

    @staticmethod
    def _value(meta: Mapping[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return decode_exception(meta.get("result"), meta.get("traceback"))
        return meta.get("result")


def _parse_date(task_id: str, value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        found = value
    else:
        try:
            found = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise BackendError(f"Task {task_id} has date_done {value!r}, not ISO 8601") from exc
    # Celery and taskq store UTC; an old or foreign writer may have left the zone out.
    if found is not None and found.tzinfo is None:
        found = found.replace(tzinfo=UTC)
    return found


class EagerResult(AsyncResult[R]):
    """The result of ``task.apply()``: already finished, nothing stored anywhere."""

    def __init__(
        self,
        id: str,
        value: Any,
        state: str,
        traceback: str | None = None,
        app: Taskq | None = None,
    ):
        self.id = id
        self.app = app
        self.parent = None
        self._backend = None
        # State and traceback are read from this meta by AsyncResult; only the value differs:
        # it is the live object (the exception itself), not a stored form to decode.
        self._cache = {"status": state, "result": value, "traceback": traceback, "children": []}
        self._value_ = value

    @property
    def result(self) -> Any:
        return self._value_

    info = result

    def maybe_throw(self, propagate: bool = True) -> None:
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self._value_

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        follow_parents: bool = True,
        disable_sync_subtasks: bool = True,
    ) -> R:
        self.maybe_throw(propagate)
        return self._value_  # type: ignore[no-any-return]

    def forget(self) -> None:
        return None


# At the end: result_set.py builds on AsyncResult, defined above, and this module offers
# its names too (where Celery has them), so the import cannot come first.
from .result_set import GroupResult, ResultSet, bind_group_result, result_from_tuple  # noqa: E402

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultSet",
    "ResultTuple",
    "bind_group_result",
    "refuse_wait_in_task",
    "result_from_tuple",
]
