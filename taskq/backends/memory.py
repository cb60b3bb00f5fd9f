"""In-process result backend, for tests with the memory:// broker and the solo pool."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import exceptions, states
from .base import Backend
from .chords import ChordTable, KeyValueChords, MemoryChordTable, held
from .codec import ResultCodec


class MemoryBackend(KeyValueChords, Backend):
    """Results in a dict guarded by a condition, so ``get()`` wakes as soon as one lands."""

    def __init__(
        self,
        expires: float | None = 86400.0,
        extended: bool = False,
        retry: Any = None,
        codec: ResultCodec | None = None,
    ):
        super().__init__(expires, extended, retry, codec)
        self._data: dict[str, tuple[bytes | str, float | None]] = {}
        self._changed = threading.Condition()
        self._chords = MemoryChordTable()
        self.chord_expires = expires

    def _chord_table(self) -> contextlib.AbstractContextManager[ChordTable]:
        return held(self._changed, self._chords)

    def _get(self, key: str) -> bytes | str | None:
        with self._changed:
            item = self._data.get(key)
        if item is None or (item[1] is not None and item[1] <= time.monotonic()):
            return None
        return item[0]

    def _set(self, key: str, value: bytes | str, state: str) -> None:
        deadline = time.monotonic() + self.expires if self.expires else None
        with self._changed:
            self._data[key] = (value, deadline)
            self._changed.notify_all()

    def _delete(self, key: str) -> None:
        with self._changed:
            self._data.pop(key, None)

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> Mapping[str, Any]:
        key = self.key_for(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                raw = self._get_locked(key)
                meta = self.decode_meta(task_id, raw)
                if meta["status"] in states.READY_STATES:
                    return meta
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise exceptions.TimeoutError("The operation timed out.")
                self._changed.wait(left)

    def _get_locked(self, key: str) -> bytes | str | None:
        item = self._data.get(key)
        return None if item is None else item[0]
