"""Workflows: chain, group, chord, and map/starmap/chunks, as Celery builds them.

Each is a ``Signature`` whose dict form is Celery's (``celery.chain`` with
``kwargs.tasks``, ``celery.group``, ``celery.chord`` with ``header``/``body``), so a
workflow built on either side travels inside a message and is expanded by whichever
worker (Celery's or taskq's) applies it. Applying one freezes every part first: each
task gets its id before anything is sent, so the result objects exist at once and a
step that fails can mark the ones that will never run (docs/canvas.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .backends.chords import Chords
from .eager import apply_signature
from .exceptions import ConfigurationError
from .message import new_id
from .result import GroupResult
from .signature import Signature, maybe_signature

if TYPE_CHECKING:
    from .app import Taskq
    from .result import GroupResult

# Options that say where a workflow sits (its id, its group, its chord) rather than how
# its tasks are sent; each kind routes them to the part they belong to.
PLACEMENT = ("task_id", "group_id", "group_index", "chord", "link", "link_error")


def _tasks_arg(tasks: tuple[Any, ...]) -> list[Any]:
    """``group(a, b)``, ``group([a, b])`` and ``group(generator)`` all mean the same."""
    if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
        return list(tasks[0])
    return list(tasks)


def _first_app(app: Taskq | None, sigs: Iterable[Signature]) -> Taskq | None:
    if app is not None:
        return app
    return next((s.app for s in sigs if s.app is not None), None)


def _split(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(placement options, sending options)."""
    placed = {k: options[k] for k in PLACEMENT if options.get(k) is not None}
    sending = {k: v for k, v in options.items() if k not in PLACEMENT}
    return placed, sending


def _link_all(sig: Signature, placed: Mapping[str, Any]) -> None:
    for cb in _listed(placed.get("link")):
        sig.link(maybe_signature(cb, sig.app) or cb)
    for eb in _listed(placed.get("link_error")):
        sig.link_error(maybe_signature(eb, sig.app) or eb)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_joins(app: Taskq) -> Chords:
    backend = app.backend
    if not isinstance(backend, Chords):
        raise ConfigurationError(
            "chords need a result backend that stores results to join them; set "
            "result_backend to redis:// or sqlite:///path (rpc:// and disabled results keep "
            "nothing to join), or use a group and join it in the client"
        )
    return backend


def _counted(sig: Signature) -> int:
    """How many members a header part counts for in its chord's join (Celery's rule): a
    chain counts as its last step, a group as its members, a chord as its body."""
    if isinstance(sig, chain):
        return _counted(sig.tasks[-1]) if sig.tasks else 0
    if isinstance(sig, group):
        return sum(_counted(m) for m in sig.members())
    return 1


def _place_in_group(sig: Signature, group_id: str) -> None:
    """Make ``sig`` (its last task, for a chain; its body, for a chord) a member of
    ``group_id``."""
    if isinstance(sig, chain) and sig.tasks:
        _place_in_group(sig.tasks[-1], group_id)
    elif isinstance(sig, chord):
        _place_in_group(sig.body, group_id)
    else:
        sig.options["group_id"] = group_id


def _root(result: Any) -> Any:
    while getattr(result, "parent", None) is not None:
        result = result.parent
    return result


class chain(Signature):
    """Tasks run one after another, each given the previous one's return value."""

    def __init__(self, *tasks: Any, app: Taskq | None = None, **options: Any):
        steps: list[Signature] = []
        for item in _tasks_arg(tasks):
            sig = maybe_signature(item, app)
            assert sig is not None
            # A chain in a chain is one longer chain (unless it has options of its own).
            steps.extend(sig.tasks if isinstance(sig, chain) and not sig.options else [sig])
        super().__init__(
            "celery.chain", (), {"tasks": steps}, options, subtask_type="chain",
            app=_first_app(app, steps),
        )  # fmt: skip

    @property
    def tasks(self) -> list[Signature]:
        return list(self.kwargs["tasks"])

    def __or__(self, other: Any) -> chain:  # type: ignore[override]  # composing, not merging
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self.app, **self.options)
        return NotImplemented

    def link(self, callback: Signature) -> Signature:
        return self.tasks[-1].link(callback) if self.tasks else super().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        for task in self.tasks:
            task.link_error(errback.clone())
        return errback

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> chain:
        copy = chain(*(t.clone() for t in self.tasks), app=self.app, **dict(self.options))
        if args or kwargs:
            # Partial arguments belong to the first task, as when the chain is applied.
            first = copy.kwargs["tasks"]
            first[0] = first[0].clone(args, kwargs)
        copy.options.update(opts)
        return copy

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        placement = {"group_id": group_id, "chord": chord, "group_index": group_index}
        steps = self._prepared(None, None, {"task_id": _id, **placement})
        self.kwargs["tasks"] = steps
        result = self._results(steps)
        if steps:
            # The chain's id is its result's (its last task's, as Celery's): what a worker
            # failing a chord whose body is this chain stores the failure under.
            self.options["task_id"] = result.id
        return result

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        app = self._app()
        if app.conf.task_always_eager:
            return apply_signature(self, args, kwargs, **options)
        placed, sending = _split({**self.options, **options})
        rest = sending.pop("chain", None) or []
        steps = self._prepared(args, kwargs, placed, [maybe_signature(s, app) for s in rest][::-1])
        if not steps:
            raise ValueError("cannot apply an empty chain")
        if any(isinstance(s, chord) for s in steps):
            _check_joins(app)  # before anything is sent
        result = self._results(steps)
        first, following = steps[0], steps[1:]
        first.apply_async(chain=[s.as_dict() for s in reversed(following)] or None, **sending)
        return result

    def _prepared(
        self,
        args: Iterable[Any] | None,
        kwargs: Mapping[str, Any] | None,
        placed: Mapping[str, Any],
        more: Iterable[Any] = (),
    ) -> list[Signature]:
        """The steps as they will be sent: copied, frozen, and each group that a task
        follows made into a chord with that task as its body (as Celery does)."""
        flat: list[Signature] = []
        for sig in [*(t.clone() for t in self.tasks), *more]:
            if isinstance(sig, chain):
                flat.extend(sig.tasks)
            elif isinstance(sig, chord) and isinstance(sig.body, chain) and sig.body.tasks:
                # The body's own steps become the chain's next steps.
                body_steps = sig.body.tasks
                sig.kwargs["body"] = body_steps[0]
                flat.extend([sig, *body_steps[1:]])
            else:
                flat.append(sig)
        steps: list[Signature] = []
        for sig in flat:
            if isinstance(sig, group) and len(sig.tasks) == 1:
                sig = sig.tasks[0]  # a group of one is that one task (as Celery unrolls it)
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], body=sig, app=self.app)
            else:
                steps.append(sig)
        if steps and (args or kwargs):
            steps[0] = steps[0].clone(args, kwargs)
        last_placement = {k: placed.get(k) for k in ("group_id", "group_index", "chord")}
        for i, step in enumerate(steps):
            if i == len(steps) - 1:
                step.freeze(placed.get("task_id"), **last_placement)
            else:
                step.freeze()
        if steps:
            for cb in _listed(placed.get("link")):
                steps[-1].link(maybe_signature(cb, self.app) or cb)
            for eb in _listed(placed.get("link_error")):
                for step in steps:
                    step.link_error(maybe_signature(eb, self.app) or eb)
        return steps

    def _results(self, steps: list[Signature]) -> Any:
        previous = None
        result: Any = None
        for step in steps:
            result = step.freeze()  # already frozen: the same ids again
            if previous is not None:
                _root(result).parent = previous
            previous = result
        return result


class group(Signature):
    """Tasks run in parallel; the result is the list of their values, in order."""

    def __init__(self, *tasks: Any, app: Taskq | None = None, **options: Any):
        members = [maybe_signature(t, app) for t in _tasks_arg(tasks)]
        super().__init__(
            "celery.group", (), {"tasks": members}, options, subtask_type="group",
            app=_first_app(app, [m for m in members if m is not None]),
        )  # fmt: skip

    @property
    def tasks(self) -> list[Signature]:
        return list(self.kwargs["tasks"])

    def __len__(self) -> int:  # a group's size, as Celery's
        return len(self.kwargs["tasks"])

    def link(self, callback: Signature) -> Signature:
        # Celery's rule: only the first member can call it, so it gets a copy that
        # does not take that member's value. A chord is the way to wait for all.
        return self.tasks[0].link(callback.clone().set(immutable=True))

    def link_error(self, errback: Signature) -> Signature:
        for task in self.tasks:
            task.link_error(errback.clone())
        return errback

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> group:
        members = [t.clone(args, kwargs) for t in self.tasks]
        return group(members, app=self.app, **{**self.options, **opts})

    def members(self) -> list[Signature]:
        """The tasks, nested groups unrolled (a group in a group is one flat group)."""
        out: list[Signature] = []
        for task in self.tasks:
            out.extend(task.members() if isinstance(task, group) and not task.options else [task])
        return out

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> GroupResult:
        from .result import GroupResult

        gid = _id or self.options.get("task_id") or new_id()
        opts = self.options
        opts["task_id"] = gid
        # A group that is itself a member (the last step of a chain in a chord's header)
        # makes its members members of the outer group, as Celery does: each one counts.
        if group_id is not None:
            opts["group_id"] = group_id
        if chord is not None:
            opts["chord"] = chord
        members = self.members()
        self.kwargs["tasks"] = members
        results = [
            m.freeze(
                group_id=opts.get("group_id") or gid,
                chord=opts.get("chord"),
                group_index=i,
                root_id=root_id,
                parent_id=parent_id,
            )
            for i, m in enumerate(members)
        ]
        return GroupResult(gid, results, app=self._app())

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        if self._app().conf.task_always_eager:
            return apply_signature(self, args, kwargs, **options)  # type: ignore[no-any-return]
        placed, sending = _split({**self.options, **options})
        sending.pop("chain", None)  # a chain never continues after a group (see chain)
        copy = self.clone(args, kwargs)
        _link_all(copy, placed)
        result = copy.freeze(
            placed.get("task_id"), group_id=placed.get("group_id"), chord=placed.get("chord")
        )
        copy.send_members(sending)
        return result

    def send_members(self, sending: Mapping[str, Any]) -> None:
        """Send each (frozen) member, with the sending options (queue, countdown, ...)."""
        for member in self.tasks:
            member.apply_async(**sending)


class chord(Signature):
    """A group (the header) whose list of results is given to one task (the body)."""

    def __init__(
        self,
        header: Any,
        body: Any = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        app: Taskq | None = None,
        **options: Any,
    ):
        if isinstance(header, Mapping) and not isinstance(header, group):
            head = maybe_signature(header, app)
            header = head if isinstance(head, group) else group([head], app=app)
        elif not isinstance(header, group):
            header = group(header, app=app)
        body_sig = maybe_signature(body, app)
        if header.app is None:
            header.app = app or (body_sig.app if body_sig is not None else None)
        super().__init__(
            "celery.chord", args,
            {"header": header, "body": body_sig, "kwargs": dict(kwargs or {})},
            options, subtask_type="chord",
            app=_first_app(app, [header, *([body_sig] if body_sig else [])]),
        )  # fmt: skip

    @property
    def header(self) -> group:
        head = self.kwargs["header"]
        if not isinstance(head, group):  # Celery may send the header as a plain list
            head = self.kwargs["header"] = group(head, app=self.app)
        return head

    @property
    def body(self) -> Signature:
        body = self.kwargs.get("body")
        if body is None:
            raise TypeError("this chord has no body: call it with one, chord(header)(body)")
        return body  # type: ignore[no-any-return]

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            self.kwargs["body"] = maybe_signature(body, self.app)
        return self.apply_async(**options)

    def as_dict(self) -> dict[str, Any]:
        # Unapplied (inside a chain's message), the header's members carry no copy of the
        # body: applying the chord gives it to them, and a message then grows with the
        # header, not with header x body.
        data = super().as_dict()
        header = data["kwargs"].get("header")
        members = header.get("kwargs", {}).get("tasks") if isinstance(header, dict) else header
        for member in members or ():
            if isinstance(member, dict):
                member.get("options", {}).pop("chord", None)
        return data

    def link(self, callback: Signature) -> Signature:
        return self.body.link(callback)

    def link_error(self, errback: Signature) -> Signature:
        return self.body.link_error(errback)

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> chord:
        body = self.kwargs.get("body")
        return chord(
            self.header.clone(args, kwargs), body.clone() if body is not None else None,
            app=self.app, **{**self.options, **opts},
        )  # fmt: skip

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Mapping[str, Any] | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """The body takes ``_id`` and the chord's own place (in an outer group or chord);
        the header's members are the chord's group, whose id is also the chord's (as in
        Celery's dict form)."""
        gid = self.header.options.get("task_id") or self.options.get("task_id") or new_id()
        self.options["task_id"] = gid
        body = self.body
        if group_id is not None:
            # Its place in an outer group (or chord) wins over the header's id it may have
            # been given when frozen alone (a task replaced by this chord, in a chord).
            _place_in_group(body, group_id)
        body_result = body.freeze(
            _id, group_id=gid, chord=chord, group_index=group_index,
            root_id=root_id, parent_id=parent_id,
        )  # fmt: skip
        header_result = self.header.freeze(gid, chord=body.as_dict())
        _root(body_result).parent = header_result
        return body_result

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        app = self._app()
        if app.conf.task_always_eager:
            return apply_signature(self, args, kwargs, **options)
        body_id = options.pop("task_id", None)  # the chord's own task_id is its group's
        placed, sending = _split({**self.options, **options})
        copy = self.clone(args, kwargs)
        body = copy.body
        rest = sending.pop("chain", None)
        if rest:
            body.set(chain=rest)  # the chain goes on after the body
        _link_all(body, placed)
        # As Celery: the sending options go to the header and the body, except a delay,
        # which is the header's alone (the body waits for the header anyway).
        body.options.update(
            {k: v for k, v in sending.items() if k not in ("countdown", "eta", "parent_id")}
        )
        result = copy.freeze(
            body_id,
            group_id=placed.get("group_id"),
            chord=placed.get("chord"),
            group_index=placed.get("group_index"),
        )
        header = copy.header
        if not header.tasks:
            body.apply_async(([],))
            return result
        backend = _check_joins(app)
        gid = str(copy.options["task_id"])
        backend.set_chord_size(gid, sum(_counted(m) for m in header.tasks))
        header_result = _root(result)
        if any(isinstance(r, GroupResult) for r in header_result.results):
            # A member whose result is a group (a chain ending in one): the join needs the
            # header's shape to give the body nested values, as Celery's client saves it.
            header_result.save(backend)
        header.send_members(sending)
        return result


for _kind, _cls in (("chain", chain), ("group", group), ("chord", chord)):
    Signature.KINDS[_kind] = _cls

# The map kinds build on group; they are importable from here, as from Celery's canvas.
from .chunks import chunks, xmap, xstarmap  # noqa: E402

__all__ = ["chain", "chord", "chunks", "group", "xmap", "xstarmap"]
