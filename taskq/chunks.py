"""``task.map``, ``task.starmap`` and ``task.chunks``: many calls of one task, few messages.

``map``/``starmap`` send one message (``celery.map``/``celery.starmap``) whose worker calls
the task once per item; ``chunks`` cuts the items into parts, one ``celery.starmap``
message each, sent as a group. The dict forms are Celery's (``subtask_type`` ``xmap``,
``xstarmap``, ``chunks``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .canvas import group
from .signature import Signature, call_options, maybe_signature

if TYPE_CHECKING:
    from .app import Taskq
    from .result import GroupResult


class xmap(Signature):
    """``task.map(items)``: one message, the task called once per item, in the worker."""

    TASK = "celery.map"

    def __init__(self, task: Any, it: Iterable[Any], app: Taskq | None = None, **options: Any):
        sig = maybe_signature(task, app)
        assert sig is not None
        # Immutable, as Celery's: the items are the arguments, never a previous step's value.
        super().__init__(
            self.TASK, (), {"task": sig, "it": list(it)}, options, immutable=True,
            app=app or sig.app,
        )  # fmt: skip


class xstarmap(xmap):
    """``task.starmap(items)``: as map, each item spread as the arguments."""

    TASK = "celery.starmap"


class chunks(Signature):
    """``task.chunks(items, n)``: the items cut into parts of ``n``, one message each."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Taskq | None = None, **options: Any
    ):
        if int(n) < 1:
            raise ValueError("chunks need a size of at least 1")
        sig = maybe_signature(task, app)
        assert sig is not None
        super().__init__(
            "celery.chunks", (), {"task": sig, "it": [list(i) for i in it], "n": int(n)},
            options, immutable=True, app=app or sig.app,
        )  # fmt: skip

    def group(self) -> group:
        task, items, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group([xstarmap(task, part, app=self.app) for part in parts], app=self.app)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group().apply_async(args, kwargs, **call_options({**self.options, **options}))

    def __call__(self, **options: Any) -> GroupResult:
        return self.apply_async(**options)


for _kind, _cls in (("xmap", xmap), ("xstarmap", xstarmap), ("chunks", chunks)):
    Signature.KINDS[_kind] = _cls

__all__ = ["chunks", "xmap", "xstarmap"]
