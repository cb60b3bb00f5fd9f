"""AsyncResult: a handle on a task's state and return value in the result backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import states
from .backends import Backend, decode_exception

if TYPE_CHECKING:
    from .app import Taskq

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """``AsyncResult(id, app=app)``. An id the backend has never seen is PENDING."""

    def __init__(self, id: str, app: Taskq | None = None, backend: Backend | None = None):
        if app is None and backend is None:
            raise TypeError("AsyncResult needs app= (or backend=)")
        self.id = id
        self.app = app
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
        if meta["status"] in states.READY_STATES:
            self._cache = meta  # a ready state never changes: no need to ask again
        return meta

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
    def date_done(self) -> str | None:
        return self._meta().get("date_done")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        """Wait for the task to finish and return its value.

        Raises the task's exception (rebuilt when its class is already importable here, else
        ``RemoteError``) when it failed and ``propagate`` is true, ``taskq.TimeoutError`` after
        ``timeout`` seconds, and ``NoBackendConfigured`` when results are disabled.
        """
        meta = self._cache or self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        value = self._value(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise value
        return value  # type: ignore[no-any-return]

    wait = get

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    @staticmethod
    def _value(meta: Mapping[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return decode_exception(meta.get("result"), meta.get("traceback"))
        return meta.get("result")


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
        self._backend = None
        # State and traceback are read from this meta by AsyncResult; only the value differs:
        # it is the live object (the exception itself), not a stored form to decode.
        self._cache = {"status": state, "result": value, "traceback": traceback}
        self._value_ = value

    @property
    def result(self) -> Any:
        return self._value_

    info = result

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self._value_
        return self._value_  # type: ignore[no-any-return]

    def forget(self) -> None:
        return None
