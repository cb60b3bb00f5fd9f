"""The result backend interface and the meta document Celery stores for each task.

A backend only needs four primitives (``_get``, ``_set``, ``_delete``, ``_wait``); the
meta format and the never-overwrite-SUCCESS rule live here once (``_set_unless_succeeded``;
Redis replaces it with a script that checks and writes in one round trip). The bytes are
the result serializer's (codec.py, chosen once per backend); exceptions are encoded in
errors.py.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import exceptions, states
from ..exceptions import BackendError
from .codec import ResultCodec
from .errors import SHARED_ERRORS, SHARED_MODULES, decode_exception, encode_exception
from .retry import RetryPolicy, retrying

KEY_PREFIX = "celery-task-meta-"
# Celery's key for a saved GroupResult (GroupResult.save / GroupResult.restore).
GROUP_KEY_PREFIX = "celery-taskset-meta-"


@dataclass(frozen=True)
class ResultContext:
    """What the worker knows about the run whose result it stores (for extended results)."""

    name: str | None = None
    args: tuple[Any, ...] | None = None
    kwargs: Mapping[str, Any] | None = None
    worker: str | None = None
    retries: int = 0
    queue: str | None = None
    group_id: str | None = None
    parent_id: str | None = None
    children: tuple[str, ...] = ()
    reply_to: str | None = None  # the caller's queue, for rpc:// results


class Backend(ABC):
    """Stores task state and results; ``wait_for`` blocks until a ready state or timeout."""

    def __init__(
        self,
        expires: float | None = 86400.0,
        extended: bool = False,
        retry: RetryPolicy | None = None,
        codec: ResultCodec | None = None,
    ):
        self.expires = expires
        self.extended = extended
        self.retry = retry or RetryPolicy()
        # The result serializer, chosen once: its functions are bound here, not looked up
        # per store.
        self.codec = codec or ResultCodec()
        self._encode = self.codec.encode
        self._encode_exception = self.codec.encode_exception
        self._overrides = threading.local()

    @contextlib.contextmanager
    def retry_policy(self, policy: RetryPolicy) -> Iterator[None]:
        """Within the block, this thread's stores follow ``policy`` instead of the backend's.

        For a caller with a retry loop of its own (the worker's result keeper).
        """
        previous = getattr(self._overrides, "policy", None)
        self._overrides.policy = policy
        try:
            yield
        finally:
            self._overrides.policy = previous

    def store_policy(self) -> RetryPolicy:
        policy: RetryPolicy | None = getattr(self._overrides, "policy", None)
        return policy or self.retry

    def transient(self, exc: BaseException) -> bool:
        """Whether a failed store may work if tried again; each backend knows its errors."""
        return isinstance(exc, ConnectionError | builtins.TimeoutError)

    # -- primitives each backend implements
    @abstractmethod
    def _get(self, key: str) -> bytes | str | None: ...

    @abstractmethod
    def _set(self, key: str, value: bytes | str, state: str) -> None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> Mapping[str, Any]:
        """Default wait: poll, starting fast and backing off to ``interval``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(0.005, interval)
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.TimeoutError("The operation timed out.")
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(interval, pause * 2)

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        pass

    def on_task_call(self, reply_to: str) -> None:  # noqa: B027 - only rpc:// needs it
        """Before a client sends a task whose results go to ``reply_to``."""

    @contextlib.contextmanager
    def stores_in_flight(self) -> Iterator[dict[str, BackendError]]:
        """Within the block, this thread's stores may return before the backend confirms them.

        The block's end waits for the last confirmation. The dict it yields maps, once the
        block is over, each task id whose store failed to the error; those stores raised
        nothing when they were made. A store is sent before it returns either way, so a
        process that dies within the block leaves its results stored. Backends that cannot
        leave a store in flight store as usual here, and raise as usual.
        """
        yield {}

    # -- the shared logic
    key_prefix = KEY_PREFIX

    def key_for(self, task_id: str) -> str:
        return f"{self.key_prefix}{task_id}"

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        context: ResultContext | None = None,
    ) -> None:
        key = self.key_for(task_id)
        value = self._encode(self.make_meta(task_id, result, state, traceback, context))
        self._retried(
            lambda: self._set_unless_succeeded(key, value, state),
            f"store the {state} state of task {task_id}",
            f"Could not store the result of task {task_id}",
        )

    def _retried(self, attempt: Callable[[], None], what: str, failed: str) -> None:
        """``attempt()`` under the store policy; any failure left over is a BackendError."""
        try:
            retrying(self.store_policy(), attempt, self.transient, what)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{failed}: {exc}") from exc

    def _set_unless_succeeded(self, key: str, value: bytes | str, state: str) -> None:
        # A task that succeeded stays succeeded, whatever a duplicate run stores later.
        current = self._get(key)
        if current is not None and self.codec.status(current) == states.SUCCESS:
            return
        self._set(key, value, state)

    def make_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        context: ResultContext | None,
    ) -> dict[str, Any]:
        if isinstance(result, BaseException):
            result = self._encode_exception(result)
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            # Celery's result tuple for each task this one sent: [[id, parent], group].
            "children": [[[c, None], None] for c in context.children] if context else [],
            "date_done": datetime.now(UTC).isoformat() if state in states.READY_STATES else None,
            "task_id": task_id,
        }
        if context is not None:
            if context.group_id:
                meta["group_id"] = context.group_id
            if context.parent_id:
                meta["parent_id"] = context.parent_id
            if self.extended and context.name is not None:
                meta.update(
                    name=context.name,
                    args=list(context.args or ()),
                    kwargs=dict(context.kwargs or {}),
                    worker=context.worker,
                    retries=context.retries,
                    queue=context.queue,
                )
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        return self.decode_meta(task_id, self._get(self.key_for(task_id)))

    def decode_meta(self, task_id: str, raw: str | bytes | None) -> dict[str, Any]:
        """The meta document stored as ``raw``; a PENDING one when nothing is stored."""
        if raw is None:
            return {
                "status": states.PENDING,
                "result": None,
                "traceback": None,
                "task_id": task_id,
                "children": [],
                "date_done": None,
            }
        try:
            meta = self.codec.decode(raw)
        except ValueError as exc:
            raise BackendError(f"Stored result of task {task_id} cannot be read: {exc}") from exc
        if not isinstance(meta, dict) or "status" not in meta:
            raise BackendError(f"Stored result of task {task_id} is not a task meta document")
        return meta

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> Mapping[str, Any]:
        return self._wait(task_id, timeout, interval)

    def forget(self, task_id: str) -> None:
        self._delete(self.key_for(task_id))

    def get_many(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The meta of each task, in the order asked; PENDING for those never stored.

        One read per task here; a backend that can read many keys in one round trip
        overrides it (``ResultSet`` reads its members through it).
        """
        return [self.get_task_meta(task_id) for task_id in task_ids]

    # -- saved groups: Celery's document {"result": <the GroupResult's tuple>}
    @property
    def group_key_prefix(self) -> str:
        # Celery puts the same global_keyprefix in front of group keys as of task keys:
        # read it off key_prefix, so a backend that sets one sets both.
        glob = self.key_prefix[: -len(KEY_PREFIX)] if self.key_prefix.endswith(KEY_PREFIX) else ""
        return f"{glob}{GROUP_KEY_PREFIX}"

    def group_key_for(self, group_id: str) -> str:
        return f"{self.group_key_prefix}{group_id}"

    def save_group(self, group_id: str, result: Sequence[Any]) -> None:
        """Store a group's result tuple (``GroupResult.as_tuple()``), with the usual expiry."""
        key = self.group_key_for(group_id)
        value = self._encode({"result": result})
        # Celery writes groups with the SUCCESS state too; a group document has no
        # "status", so no backend's keep-a-stored-success check ever refuses it.
        self._retried(
            lambda: self._set(key, value, states.SUCCESS),
            f"save group {group_id}",
            f"Could not save group {group_id}",
        )

    def restore_group(self, group_id: str) -> list[Any] | None:
        """The result tuple saved for the group (as JSON lists), or None if none is stored."""
        raw = self._get(self.group_key_for(group_id))
        if raw is None:
            return None
        try:
            doc = self.codec.decode(raw)
        except ValueError as exc:
            raise BackendError(f"Stored group {group_id} cannot be read: {exc}") from exc
        # A list once decoded from JSON or msgpack; the tuple itself under pickle.
        if not isinstance(doc, dict) or not isinstance(doc.get("result"), list | tuple):
            raise BackendError(f"Stored group {group_id} is not a group result document")
        return list(doc["result"])

    def delete_group(self, group_id: str) -> None:
        self._delete(self.group_key_for(group_id))


__all__ = [
    "SHARED_ERRORS",
    "SHARED_MODULES",
    "Backend",
    "ResultContext",
    "decode_exception",
    "encode_exception",
]
