"""ResultSet and GroupResult: many task results handled as one, in Celery's forms.

A ``GroupResult`` can be saved in the backend under Celery's key
(``celery-taskset-meta-<group id>``) and restored by id from any process, Celery's included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, overload

from . import states
from .backends import Backend, DisabledBackend
from .exceptions import NoBackendConfigured
from .result import AsyncResult, ResultTuple, refuse_wait_in_task

if TYPE_CHECKING:
    from .app import Taskq

# A set's members: task results, or groups of them (a group of groups is a group).
Member: TypeAlias = "AsyncResult[Any] | GroupResult"

# join() reads members in batches of this many (one backend call each when the backend
# reads many keys at once), each batch when the wait reaches it: members that finished
# while earlier ones were awaited then cost no wait of their own.
READ_AHEAD = 1000


class ResultSet:
    """``ResultSet([result, ...], app=app)``: the results of several tasks, in order."""

    supports_native_join = True

    def __init__(
        self,
        results: Iterable[Member] | None = None,
        app: Taskq | None = None,
        *,
        backend: Backend | None = None,
    ):
        self.results: list[Member] = list(results or ())
        self._app = app
        self._backend = backend

    @property
    def app(self) -> Taskq | None:
        if self._app is None and self.results:
            return self.results[0].app
        return self._app

    @app.setter
    def app(self, app: Taskq | None) -> None:
        self._app = app

    @property
    def backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        if self._app is not None:
            return self._app.backend
        if self.results:
            return self.results[0].backend
        raise TypeError(f"{type(self).__name__} with no members needs app= (or backend=)")

    # -- membership
    def add(self, result: Member) -> None:
        """Add ``result`` unless it is a member already."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Member | str) -> None:
        """Remove a member (or the member with this id); KeyError if there is none."""
        try:
            self.results.remove(result)  # type: ignore[arg-type]  # a str matches by id
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: Member | str) -> None:
        """Remove ``result`` if it is a member."""
        with contextlib.suppress(KeyError):
            self.remove(result)

    def update(self, results: Iterable[Member]) -> None:
        """Add each of ``results`` that is not a member already."""
        for result in results:
            self.add(result)

    def clear(self) -> None:
        self.results.clear()

    def __iter__(self) -> Iterator[Member]:
        return iter(self.results)

    @overload
    def __getitem__(self, index: int) -> Member: ...
    @overload
    def __getitem__(self, index: slice) -> list[Member]: ...
    def __getitem__(self, index: int | slice) -> Member | list[Member]:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return self.results == other.results
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    # -- state, from one read per batch of members rather than one per member
    def successful(self) -> bool:
        """Whether every member succeeded."""
        return all(
            s == states.SUCCESS if isinstance(s, str) else s.successful() for s in self._now()
        )

    def failed(self) -> bool:
        """Whether any member failed (FAILURE)."""
        return any(s == states.FAILURE if isinstance(s, str) else s.failed() for s in self._now())

    def waiting(self) -> bool:
        """Whether any member is not finished yet."""
        return not self.ready()

    def ready(self) -> bool:
        """Whether every member finished (succeeded, failed or was revoked)."""
        return all(
            s in states.READY_STATES if isinstance(s, str) else s.ready() for s in self._now()
        )

    def completed_count(self) -> int:
        """How many members succeeded (a member group counts once, when all of it did)."""
        return sum(
            s == states.SUCCESS if isinstance(s, str) else s.successful() for s in self._now()
        )

    def maybe_throw(self, propagate: bool = True) -> None:
        """Raise the first failed or revoked member's exception (no waiting)."""
        if propagate:
            _raise_first_failure(self.results, _read(self.results))

    def _now(self) -> list[str | GroupResult]:
        """Each member's state now (a member group stands for itself)."""
        metas = _read(self.results)
        return [
            r if isinstance(r, GroupResult) else str(metas[r.id]["status"]) for r in self.results
        ]

    def forget(self) -> None:
        """Delete every member's stored result."""
        for result in self.results:
            result.forget()

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Revoke every member in one command (see ``AsyncResult.revoke``); a member group
        stands for its tasks (no worker runs a task with the group's own id)."""
        if self.app is None:
            raise TypeError("revoke() goes through the broker: make the result set with app=")
        self.app.control.revoke(
            _task_ids(self.results), connection=connection, terminate=terminate,
            signal=signal, reply=wait, timeout=timeout,
        )  # fmt: skip

    # -- waiting
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], object] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """The same as ``join()``."""
        return self.join(timeout, propagate, interval, callback, disable_sync_subtasks)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], object] | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """Wait for every member; their values in the members' order.

        ``timeout`` bounds the whole wait (``taskq.TimeoutError``). With ``propagate``, the
        exception of the first member found failed or revoked is raised (a member that
        finished is never waited for). Without it, a failed member's place holds its
        exception. With ``callback``, each ``(id, value)`` goes to it instead, and the list
        returned is empty. Inside a task run by a worker it raises RuntimeError unless
        ``disable_sync_subtasks`` is false.
        """
        if disable_sync_subtasks:
            refuse_wait_in_task(self.app)
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
        for start in range(0, len(self.results), READ_AHEAD):
            batch = self.results[start : start + READ_AHEAD]
            metas = _read(batch)  # the finished ones are now known to their results
            if propagate:
                _raise_first_failure(batch, metas)
            for result in batch:
                # A budget spent (or 0) still reads each result once: a finished one is
                # returned, an unfinished one raises TimeoutError.
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                value = result.get(
                    timeout=left,
                    propagate=propagate,
                    interval=interval,
                    disable_sync_subtasks=False,
                )
                if callback is not None:
                    callback(result.id, value)
                else:
                    values.append(value)
        return values

    # Every backend waits without polling each member in turn (join reads in batches):
    # join is already the native join.
    join_native = join


class GroupResult(ResultSet):
    """``GroupResult(id, [results], parent=None, app=app)``: a result set with an id.

    ``save()`` stores it in the backend; ``GroupResult.restore(id, app=app)`` reads it back.
    """

    # Set on the class that ``bind_group_result(app)`` returns, for ``app.GroupResult``.
    default_app: ClassVar[Taskq | None] = None

    def __init__(
        self,
        id: str,
        results: Iterable[Member] | None = None,
        parent: Member | None = None,
        app: Taskq | None = None,
        *,
        backend: Backend | None = None,
    ):
        super().__init__(results, app or self.default_app, backend=backend)
        self.id = id
        self.parent = parent

    def save(self, backend: Backend | None = None) -> GroupResult:
        """Store the group (its id, parent and members) under Celery's key, with expiry."""
        backend = backend or self.backend
        if isinstance(backend, DisabledBackend):
            # Its writes are dropped by design (a task's result is then simply not kept),
            # but a group saved to be restored later must not vanish without a word.
            raise NoBackendConfigured(
                "No result backend is configured, so a group cannot be saved. Set one, e.g. "
                "Taskq('proj', backend='redis://localhost:6379/1') or conf.result_backend."
            )
        backend.save_group(self.id, self.as_tuple())
        return self

    def delete(self, backend: Backend | None = None) -> None:
        """Delete the saved group (its members' results stay)."""
        (backend or self.backend).delete_group(self.id)

    @classmethod
    def restore(
        cls, id: str, backend: Backend | None = None, app: Taskq | None = None
    ) -> GroupResult | None:
        """The group saved under ``id``, or None if none is stored (or it expired)."""
        app = app or cls.default_app
        if backend is None:
            if app is None:
                raise TypeError("GroupResult.restore needs app= (or backend=)")
            stored = app.backend.restore_group(id)
        else:
            stored = backend.restore_group(id)
        if stored is None:
            return None
        restored = result_from_tuple(stored, app, backend)
        if not isinstance(restored, GroupResult):
            raise ValueError(f"Group {id} is stored as a single task's result: {stored!r}")
        return restored

    def as_tuple(self) -> ResultTuple:
        """Celery's serialised form: ``((id, parent's tuple or None), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def as_list(self) -> list[str]:
        ids = [self.id]
        if self.parent is not None:
            ids.extend(self.parent.as_list())
        return ids

    @property
    def children(self) -> list[Member]:
        return self.results

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return (self.id, self.results, self.parent) == (other.id, other.results, other.parent)
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __bool__(self) -> bool:
        return bool(self.id or self.results)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __str__(self) -> str:
        return self.id


def bind_group_result(app: Taskq) -> type[GroupResult]:
    """A GroupResult class whose instances and ``restore`` use ``app`` by default."""

    class AppGroupResult(GroupResult):
        default_app = app

    AppGroupResult.__name__ = AppGroupResult.__qualname__ = "GroupResult"
    return AppGroupResult


def result_from_tuple(
    tup: Sequence[Any] | Member, app: Taskq | None = None, backend: Backend | None = None
) -> Member:
    """Rebuild a result, its parents and a group's members from Celery's tuple form.

    ``[[id, parent], None]`` is a task's result, ``[[id, parent], [member, ...]]`` a group's;
    a bare id in place of ``[id, parent]`` means no parent. A result object is returned as
    it is.
    """
    if isinstance(tup, AsyncResult | GroupResult):
        return tup
    if app is None and backend is None:
        raise TypeError("result_from_tuple needs app= (or backend=)")
    try:
        head, members = tup
        id, parent = (head, None) if isinstance(head, str) else head
    except (TypeError, ValueError):
        raise ValueError(f"Not a result tuple: {tup!r}") from None
    if not isinstance(id, str):
        raise ValueError(f"Not a result tuple: {tup!r}")
    parent_result = result_from_tuple(parent, app, backend) if parent else None
    if members is None:
        return AsyncResult(id, app=app, backend=backend, parent=parent_result)
    return GroupResult(
        id,
        [result_from_tuple(m, app, backend) for m in members],
        parent=parent_result,
        app=app,
        backend=backend,
    )


def _task_ids(results: Sequence[Member]) -> list[str]:
    """The ids of the tasks in ``results``, those of member groups' tasks included."""
    return [
        i for r in results for i in (_task_ids(r.results) if isinstance(r, GroupResult) else [r.id])
    ]


def _read(results: Sequence[Member]) -> dict[str, Mapping[str, Any]]:
    """The meta of each task among ``results``, read in one call per backend.

    Results already known to be finished are not read again, and those found finished
    now keep their meta, so a wait for them returns at once.
    """
    metas: dict[str, Mapping[str, Any]] = {}
    unread: dict[int, tuple[Backend, list[AsyncResult[Any]]]] = {}
    for result in results:
        if isinstance(result, GroupResult):
            continue
        if result._cache is not None:
            metas[result.id] = result._cache
        else:
            unread.setdefault(id(result.backend), (result.backend, []))[1].append(result)
    for backend, todo in unread.values():
        for result, meta in zip(todo, backend.get_many([r.id for r in todo]), strict=True):
            result._remember(meta)
            metas[result.id] = meta
    return metas


def _raise_first_failure(results: Sequence[Member], metas: Mapping[str, Mapping[str, Any]]) -> None:
    for result in results:
        if isinstance(result, GroupResult):
            result.maybe_throw()
        elif metas[result.id]["status"] in states.PROPAGATE_STATES:
            raise AsyncResult._value(metas[result.id])


__all__ = ["GroupResult", "Member", "ResultSet", "bind_group_result", "result_from_tuple"]
