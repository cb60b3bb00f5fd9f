"""Signature: a task call as a value (name, partial args, options) that can be sent later.

A signature is a ``dict`` with Celery's keys (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``), as Celery's is: it serializes as itself wherever JSON
goes (a task argument, ``link=``, a message's ``chain``), and it is changed in place by
``set``/``link``/``freeze`` as Celery code expects; ``clone`` makes a copy. The
composite kinds (chain, group, chord, ...) live in ``canvas.py`` and are found by their
``subtask_type`` when a dict comes back from the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard

from .message import new_id

if TYPE_CHECKING:
    from .app import Taskq
    from .canvas import chain

# Options a Celery signature can carry that are Celery's own bookkeeping, never a call
# option: dropped when taskq sends the call (stamp keys are dropped by name too).
CELERY_ONLY_OPTIONS = frozenset(
    {"stamped_headers", "stamps", "chord_size", "subtask_type", "producer", "connection",
     "router", "result_cls", "publisher", "is_eager", "disable_sync_subtasks"}
)  # fmt: skip


class Signature(dict[str, Any]):
    """One task call: ``add.s(2, 2)``, ``Signature("proj.add", (2, 2), app=app)``."""

    # subtask_type -> class, filled by canvas.py, so a dict from the wire finds its kind.
    KINDS: ClassVar[dict[str, type[Signature]]] = {}

    def __init__(
        self,
        task: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        subtask_type: str | None = None,
        app: Taskq | None = None,
    ):
        super().__init__(
            task=task,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}),
            subtask_type=subtask_type,
            immutable=bool(immutable),
        )
        self.app = app

    # -- Celery's attribute view of the dict
    @property
    def task(self) -> str:
        return str(self["task"])

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]  # type: ignore[no-any-return]

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]  # type: ignore[no-any-return]

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @property
    def subtask_type(self) -> str | None:
        return self["subtask_type"]  # type: ignore[no-any-return]

    @property
    def id(self) -> str | None:
        """The task id, once frozen (or given with ``set(task_id=...)``)."""
        return self.options.get("task_id")

    # -- changing it (in place, as Celery's) and copying it
    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self.set_immutable(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy; unless immutable, ``args`` go in front and ``kwargs`` are merged."""
        new_args, new_kwargs = self._merge(args, kwargs)
        copy = type(self).from_dict(self, self.app)
        copy["args"], copy["kwargs"] = new_args, new_kwargs
        # Options nest (headers, links, a chain's rest): a copy shares none of them.
        copy["options"] = {**_copied(self.options), **options}
        return copy

    def _merge(
        self, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, dict(self.kwargs)
        return tuple(args or ()) + self.args, {**self.kwargs, **(kwargs or {})}

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's return value when it succeeds."""
        return self._append_option("link", callback)

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when this task fails."""
        return self._append_option("link_error", errback)

    def on_error(self, errback: Signature) -> Signature:
        self.link_error(errback)
        return self

    def _append_option(self, key: str, sig: Signature) -> Signature:
        items = self.options.get(key)
        items = [] if items is None else list(items) if isinstance(items, list | tuple) else [items]
        if sig not in items:
            items.append(sig)
        self.options[key] = items
        return sig

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Give the call its task id now (and group membership); returns its result."""
        from .result import AsyncResult

        opts = self.options
        if _id is not None:
            opts["task_id"] = _id
        opts.setdefault("task_id", new_id())
        if group_id is not None:
            # Its first group stays its group (as Celery's): a chord frozen again by its
            # own apply must not move its body out of the group it is a member of.
            opts.setdefault("group_id", group_id)
        for key, value in (
            ("chord", chord),
            ("root_id", root_id),
            ("parent_id", parent_id),
            ("group_index", group_index),
        ):
            if value is not None:
                opts[key] = value
        return AsyncResult(opts["task_id"], app=self._app())

    # -- composing
    def __or__(self, other: Any) -> chain:  # type: ignore[override]  # composing, not merging
        from .canvas import chain

        if isinstance(other, Signature):
            return chain(self, other, app=self.app or other.app)
        return NotImplemented

    # -- calling
    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the call: partial args merged, options over the signature's own (run here
        instead with ``task_always_eager``)."""
        app = self._app()
        if app.conf.task_always_eager and self.task in app.tasks:
            return self.apply(args, kwargs, **options)
        new_args, new_kwargs = self._merge(args, kwargs)
        # Options the signature carries may come from a Celery client and name things
        # taskq does not do: those are dropped. Options given here are checked.
        merged = {**call_options(self.options, strict=False), **call_options(options)}
        return app.send_task(self.task, new_args, new_kwargs, **merged)

    def apply(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:  # fmt: skip
        """Run it here, now, as a worker would (a chain, group or chord too): its result."""
        from .eager import apply_signature

        return apply_signature(self, args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, in this process."""
        new_args, new_kwargs = self._merge(args, kwargs)
        return self._app().tasks[self.task](*new_args, **new_kwargs)

    def as_dict(self) -> dict[str, Any]:
        """A plain-dict copy, nested signatures included, as it goes on the wire."""
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": _plain(self.kwargs),
            "options": _plain(self.options),
            "subtask_type": self.subtask_type,
            "immutable": self.immutable,
        }

    def _app(self) -> Taskq:
        if self.app is None:
            raise TypeError(
                f"signature {self.task!r} is not bound to an app; build it with "
                "task.s(...) or signature(data, app=app)"
            )
        return self.app

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: Taskq | None = None) -> Signature:
        """The signature (of the right kind) that a dict from the wire describes."""
        kind = Signature.KINDS.get(str(data.get("subtask_type") or ""), Signature)
        if cls is not Signature and kind is Signature:
            kind = cls
        sig = Signature.__new__(kind)
        dict.__init__(
            sig,
            task=str(data["task"]),
            args=tuple(data.get("args") or ()),
            # Only a composite's kwargs hold signatures (a chain's tasks, a chord's parts);
            # a plain task's kwargs are the user's, passed as they came.
            kwargs=_revive(dict(data.get("kwargs") or {}), app)
            if data.get("subtask_type")
            else dict(data.get("kwargs") or {}),
            options=_revive(dict(data.get("options") or {}), app),
            subtask_type=data.get("subtask_type"),
            immutable=bool(data.get("immutable", False)),
        )
        sig.app = app if app is not None else getattr(data, "app", None)
        return sig


def signature(
    varies: str | Mapping[str, Any],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: Taskq | None = None,
    **more_options: Any,
) -> Signature:
    """``signature("proj.add", args=(2, 2), app=app)`` or ``signature(a_dict, app=app)``."""
    if isinstance(varies, Mapping):
        if isinstance(varies, Signature) and app is None:
            return varies.clone()
        return Signature.from_dict(varies, app)
    return Signature(varies, args, kwargs, {**(options or {}), **more_options}, app=app)


def maybe_signature(value: Any, app: Taskq | None = None) -> Signature | None:
    if value is None:
        return None
    if isinstance(value, Signature):
        if app is not None and value.app is None:
            value.app = app
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a signature (a dict with a 'task'), not {value!r}")
    return Signature.from_dict(value, app)


def _revive(data: dict[str, Any], app: Taskq | None) -> dict[str, Any]:
    """Nested signature dicts (links, a chain's tasks, a chord's parts) as signatures."""
    for key in ("link", "link_error", "tasks", "header", "body", "task"):
        value = data.get(key)
        if _is_sig(value):
            data[key] = Signature.from_dict(value, app)
        elif isinstance(value, list | tuple) and value and all(_is_sig(v) for v in value):
            data[key] = [Signature.from_dict(v, app) for v in value]
    return data


def _is_sig(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping) and isinstance(value.get("task"), str) and "args" in value


def _copied(value: Any) -> Any:
    if isinstance(value, Signature):
        return value.clone()
    if isinstance(value, Mapping):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Signature):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def call_options(options: Mapping[str, Any], strict: bool = True) -> dict[str, Any]:
    """A signature's options as ``send_task`` takes them: Celery's bookkeeping dropped,
    and with ``strict=False`` any name ``send_task`` does not know."""
    from .calling import OPTION_NAMES

    stamps = options.get("stamped_headers") or ()
    return {
        k: v
        for k, v in options.items()
        if k not in CELERY_ONLY_OPTIONS
        and k not in stamps
        and v is not None
        and (strict or k in OPTION_NAMES)
    }


def signature_dicts(value: Any) -> tuple[dict[str, Any], ...]:
    """Normalize a ``link=``/``link_error=``/``chain=`` option to a tuple of plain dicts."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if isinstance(item, Signature):
            out.append(item.as_dict())
        elif isinstance(item, Mapping) and isinstance(item.get("task"), str):
            out.append(_plain(dict(item)))
        elif hasattr(item, "s") and callable(item.s):
            out.append(item.s().as_dict())
        else:
            raise TypeError(f"link/link_error takes signatures (task.s(...)), not {item!r}")
    return tuple(out)
