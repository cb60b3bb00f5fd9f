"""taskq's subclasses of kombu, py-amqp and billiard classes keep the callers' contract.

kombu calls its own methods with its own arguments. A subclass that reuses a method's name
for something else breaks kombu where it least shows: the Redis poller once named a helper
``_unregister``, and kombu's call ``_unregister(channel, client, type)`` after a reconnect
raised TypeError on every poll from then on. This test finds every method a taskq class
overrides and checks that it still accepts every way the base class's signature allows it
to be called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from taskq.transports import amqp, memory, redis, redis_clients, redis_landing, redis_take, sqlite
from taskq.worker import prefork

CLASSES = [
    redis.QoS, redis.Channel, redis.Poller, redis.Transport, redis_landing.LandingChannel,
    redis_take.TakingQoS, redis_take.TakingChannel, redis_clients.ClientChannel,
    amqp.BufferedTCPTransport, amqp.Channel, amqp.Connection, amqp.Transport,
    sqlite.QoS, sqlite.Channel, sqlite.Transport, memory.Channel, memory.Transport,
    prefork._Billiard, prefork._ResultsOnTheLoop,
]  # fmt: skip


def foreign_overrides(cls: type) -> list[tuple[str, Callable[..., Any], Callable[..., Any]]]:
    """(name, taskq's method, the first non-taskq base's method) for each override."""
    found = []
    for name, ours in vars(cls).items():
        if not inspect.isfunction(ours) or name.startswith("__"):
            continue
        for base in cls.__mro__[1:]:
            if base.__module__.startswith("taskq."):
                continue
            theirs = vars(base).get(name)
            if inspect.isfunction(theirs):
                found.append((name, ours, theirs))
            if theirs is not None:
                break
    return found


def accepts(ours: Callable[..., Any], theirs: Callable[..., Any]) -> str | None:
    """Why a call that ``theirs`` allows would fail on ``ours``, or None.

    The calls checked: the base's required arguments by position, its optional ones by
    name (kombu and py-amqp pass optional arguments both ways; an override that takes
    them by name, or as ``**kwargs``, serves their callers).
    """
    try:
        mine = inspect.signature(ours)
        base = inspect.signature(theirs)
    except (TypeError, ValueError):
        return None
    kind = inspect.Parameter
    positional_kinds = (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
    my_params = list(mine.parameters.values())
    any_positional = any(p.kind is kind.VAR_POSITIONAL for p in my_params)
    any_keyword = any(p.kind is kind.VAR_KEYWORD for p in my_params)
    positional = [p for p in my_params if p.kind in positional_kinds]
    by_name = {p.name: p for p in my_params if p.kind is not kind.POSITIONAL_ONLY}
    base_params = list(base.parameters.values())
    base_required = [
        p for p in base_params if p.kind in positional_kinds and p.default is kind.empty
    ]
    if len(base_required) > len(positional) and not any_positional:
        return f"takes {len(positional)} positional arguments; the base needs {len(base_required)}"
    mine_required = [p for p in positional if p.default is kind.empty]
    if len(mine_required) > len(base_required):
        return f"requires {len(mine_required)} arguments, the base {len(base_required)}"
    for p in base_params:
        if p.default is not kind.empty and p.name not in by_name and not any_keyword:
            return f"has no parameter {p.name!r}"
    return None


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_overrides_accept_the_base_classes_calls(cls: type) -> None:
    problems = [
        f"{cls.__qualname__}.{name}: {why}"
        for name, ours, theirs in foreign_overrides(cls)
        if (why := accepts(ours, theirs)) is not None
    ]
    assert problems == []


def test_the_check_sees_a_renamed_helper() -> None:
    class Base:
        def _unregister(self, channel: Any, client: Any, type: Any) -> None: ...

        def handle(self, fileno: int, event: int, *, strict: bool = False) -> None: ...

    class Broken(Base):
        def _unregister(self) -> None: ...  # type: ignore[override]

        def handle(self, fileno: int, event: int) -> None: ...  # type: ignore[override]

    class Fine(Base):
        def _unregister(self, *args: Any) -> None: ...

        def handle(self, fileno: int, event: int, **kwargs: Any) -> None: ...

    Base.__module__ = Broken.__module__ = Fine.__module__ = "kombu.fake"
    Broken.__module__ = Fine.__module__ = "taskq.fake"
    assert [accepts(o, t) is None for _, o, t in foreign_overrides(Broken)] == [False, False]
    assert [accepts(o, t) is None for _, o, t in foreign_overrides(Fine)] == [True, True]
