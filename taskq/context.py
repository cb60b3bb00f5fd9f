"""Context: what a running task knows about its own call (``self.request``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Context:
    """What a running task knows about its own call (``self.request`` in a bound task)."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    callbacks: tuple[dict[str, Any], ...] = ()
    errbacks: tuple[dict[str, Any], ...] = ()
    chain: tuple[dict[str, Any], ...] = ()
    chord: dict[str, Any] | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    delivery_info: Mapping[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    origin: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    is_eager: bool = False
    called_directly: bool = True
    replaced_task_nesting: int = 0


class TaskStack(threading.local):
    """The tasks running in this thread, innermost last, each with the ids it sent.

    Per thread (a thread pool runs one task per thread), so tasks a task sends get its
    id as parent and its root as root, and its result can list them as children.
    """

    def __init__(self) -> None:
        self.frames: list[tuple[Context, list[str]]] = []

    def push(self, context: Context) -> None:
        self.frames.append((context, []))

    def pop(self) -> list[str]:
        """Leave the innermost task; the ids of the tasks it sent."""
        return self.frames.pop()[1]

    def current(self) -> Context | None:
        return self.frames[-1][0] if self.frames else None

    def children(self) -> list[str]:
        return list(self.frames[-1][1]) if self.frames else []

    def add_child(self, task_id: str) -> None:
        if self.frames:
            self.frames[-1][1].append(task_id)
