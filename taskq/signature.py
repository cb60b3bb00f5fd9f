"""Signature: a task call as a value (name, partial args, options) that can be sent later.

Its dict form is Celery's (``task``, ``args``, ``kwargs``, ``options``, ``subtask_type``,
``immutable``), so signatures in ``link=``/``link_error=`` cross between taskq and Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Taskq
    from .result import AsyncResult


@dataclass(frozen=True)
class Signature:
    """An immutable description of one task call; ``set``/``clone`` return copies."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    immutable: bool = False
    subtask_type: str | None = None
    app: Taskq | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.task

    def set(self, **options: Any) -> Signature:
        """A copy with more ``apply_async`` options (queue, countdown, priority, ...)."""
        return replace(self, options={**self.options, **options})

    def set_immutable(self, immutable: bool) -> Signature:
        return replace(self, immutable=immutable)

    def clone(
        self, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with ``args`` appended (unless immutable), kwargs merged and options set."""
        new_args = self.args if self.immutable else tuple(args) + self.args
        new_kwargs = dict(self.kwargs) if self.immutable else {**self.kwargs, **(kwargs or {})}
        return replace(self, args=new_args, kwargs=new_kwargs, options={**self.options, **options})

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        app = self._app()
        sig = self.clone(tuple(args), kwargs, **options)
        return app.send_task(sig.task, sig.args, dict(sig.kwargs), **dict(sig.options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, in this process."""
        sig = self.clone(args, kwargs)
        return self._app().tasks[sig.task](*sig.args, **sig.kwargs)

    def as_dict(self) -> dict[str, Any]:
        options = {k: _encode_option(v) for k, v in self.options.items()}
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": options,
            "subtask_type": self.subtask_type,
            "immutable": self.immutable,
        }

    def _app(self) -> Taskq:
        if self.app is None:
            raise TypeError(
                f"signature {self.task!r} is not bound to an app; build it with "
                "task.s(...) or Signature.from_dict(data, app=app)"
            )
        return self.app

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Taskq | None = None) -> Signature:
        options = dict(data.get("options") or {})
        for key in ("link", "link_error"):
            if key in options and options[key] is not None:
                options[key] = [cls.from_dict(s, app) for s in _as_list(options[key])]
        return cls(
            task=str(data["task"]),
            args=tuple(data.get("args") or ()),
            kwargs=dict(data.get("kwargs") or {}),
            options=options,
            immutable=bool(data.get("immutable", False)),
            subtask_type=data.get("subtask_type"),
            app=app,
        )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _encode_option(value: Any) -> Any:
    if isinstance(value, Signature):
        return value.as_dict()
    if isinstance(value, list | tuple) and any(isinstance(v, Signature) for v in value):
        return [_encode_option(v) for v in value]
    return value


def signature_dicts(value: Any) -> tuple[dict[str, Any], ...]:
    """Normalize a ``link=``/``link_error=`` option to a tuple of signature dicts."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if isinstance(item, Signature):
            out.append(item.as_dict())
        elif isinstance(item, Mapping) and isinstance(item.get("task"), str):
            out.append(dict(item))
        elif hasattr(item, "s") and callable(item.s):
            out.append(item.s().as_dict())
        else:
            raise TypeError(f"link/link_error takes signatures (task.s(...)), not {item!r}")
    return tuple(out)
