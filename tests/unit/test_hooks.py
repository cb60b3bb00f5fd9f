"""Task classes, handlers and signals, run eagerly (`apply`) and by an in-process worker."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from taskq import ConfigurationError, Task, Taskq, signals, states
from taskq.exceptions import ExceptionInfo

Calls = list[tuple[Any, ...]]


class Recording(Task[Any, Any]):
    """Records each handler call with its arguments; options as class attributes."""

    max_retries = 5
    default_retry_delay = 0.0
    calls: Calls = []

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self.calls.append(("before_start", task_id, args, dict(kwargs), self.request.id))

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> None:
        self.calls.append(("on_success", retval, task_id, args, dict(kwargs)))

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.calls.append(("on_retry", exc, task_id, type(einfo)))

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.calls.append(("on_failure", exc, task_id, args, einfo))

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("after_return", status, retval, task_id, einfo))


@pytest.fixture
def calls() -> Iterator[Calls]:
    Recording.calls = []
    yield Recording.calls


@pytest.fixture
def app() -> Taskq:
    return Taskq("hooks", broker="memory://", set_as_current=False)


def test_class_attributes_are_option_defaults_and_the_decorator_wins(app: Taskq) -> None:
    @app.task(base=Recording)
    def plain() -> None: ...

    @app.task(base=Recording, max_retries=1)
    def own() -> None: ...

    assert isinstance(plain, Recording) and plain.max_retries == 5
    assert own.max_retries == 1 and own.options.default_retry_delay == 0.0

    class Deeper(Recording):
        acks_late = False

    @app.task(base=Deeper)
    def deeper() -> None: ...

    assert (deeper.max_retries, deeper.acks_late) == (5, False)
    with pytest.raises(ConfigurationError, match=r"not a subclass of taskq\.Task"):
        app.task(base=dict)  # type: ignore[call-overload]


def test_app_task_class_is_the_default_base(calls: Calls) -> None:
    app = Taskq("cls", broker="memory://", set_as_current=False, task_cls=Recording)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert isinstance(add, Recording) and issubclass(app.Task, Task)
    assert add.apply((1, 2)).get() == 3
    assert [c[0] for c in calls] == ["before_start", "on_success", "after_return"]


def test_handlers_and_signals_of_a_success_in_celerys_order(app: Taskq, calls: Calls) -> None:
    @app.task(base=Recording, bind=True)
    def add(self: Task[..., int], x: int, y: int) -> int:
        calls.append(("run", self.request.id))
        return x + y

    def receiver(name: str) -> Any:
        def record(sender: Any, signal: Any, **kw: Any) -> None:
            calls.append((name, sender, kw))

        return record

    prerun, postrun, success = receiver("prerun"), receiver("postrun"), receiver("success")
    signals.task_prerun.connect(prerun, sender=add)
    signals.task_postrun.connect(postrun, sender="hooks.elsewhere")  # another task: not sent
    signals.task_success.connect(success)
    try:
        result = add.apply((2, 3), task_id="t-1")
    finally:
        for s, r in ((signals.task_prerun, prerun), (signals.task_success, success)):
            s.disconnect(r, sender=add if s is signals.task_prerun else None)
        signals.task_postrun.disconnect(postrun, sender="hooks.elsewhere")
    assert result.get() == 5
    names = [c[0] for c in calls]
    assert names == ["prerun", "before_start", "run", "on_success", "success", "after_return"]
    assert calls[0][2] == {"task_id": "t-1", "task": add, "args": (2, 3), "kwargs": {}}
    assert calls[1] == ("before_start", "t-1", (2, 3), {}, "t-1")  # self.request is set
    assert calls[3] == ("on_success", 5, "t-1", (2, 3), {})
    assert calls[4][2]["result"] == 5 and calls[4][2]["runtime"] >= 0
    assert calls[5] == ("after_return", states.SUCCESS, 5, "t-1", None)


def test_failure_and_retry_handlers(app: Taskq, calls: Calls) -> None:
    @app.task(base=Recording)
    def boom(x: int) -> None:
        raise KeyError(x)

    result = boom.apply((7,), task_id="f-1")
    assert result.state == states.FAILURE
    name, exc, task_id, args, einfo = calls[1]
    assert (name, task_id, args) == ("on_failure", "f-1", (7,)) and isinstance(exc, KeyError)
    assert isinstance(einfo, ExceptionInfo) and "KeyError: 7" in einfo.traceback
    assert einfo.exception is exc and einfo.type is KeyError
    assert calls[2][:3] == ("after_return", states.FAILURE, exc)

    calls.clear()

    @app.task(base=Recording, bind=True)
    def flaky(self: Task[..., str]) -> str:
        if self.request.retries < 2:
            raise self.retry(exc=ValueError("later"))
        return "done"

    assert flaky.apply(task_id="r-1").get() == "done"
    retries = [c for c in calls if c[0] == "on_retry"]
    assert len(retries) == 2 and all(isinstance(c[1], ValueError) for c in retries)
    assert retries[0][3] is ExceptionInfo
    # after_return is not told of a retry: only of the run that finished
    assert [c[1] for c in calls if c[0] == "after_return"] == [states.SUCCESS]


def test_before_start_raising_fails_the_task(app: Taskq) -> None:
    class Guarded(Task[Any, Any]):
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            raise PermissionError("not now")

    ran = []

    @app.task(base=Guarded)
    def guarded() -> None:
        ran.append(1)

    result = guarded.apply()
    assert result.state == states.FAILURE and isinstance(result.result, PermissionError)
    assert ran == []


def test_a_receiver_error_is_logged_not_raised(
    app: Taskq, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task
    def fine() -> int:
        return 1

    def broken(**kw: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.task_prerun.connect(broken)
    try:
        assert fine.apply().get() == 1
    finally:
        assert signals.task_prerun.disconnect(broken)
    assert "receiver bug" in caplog.text


def test_weak_receivers_go_with_their_function_and_dispatch_uid_replaces() -> None:
    signal = signals.Signal("test_signal")
    got: list[str] = []

    def first(**kw: Any) -> None:
        got.append("first")

    signal.connect(first, dispatch_uid="one")
    signal.connect(lambda **kw: got.append("second"), dispatch_uid="one", weak=False)
    signal.send(sender=None)
    assert got == ["second"]

    def gone(**kw: Any) -> None:
        got.append("gone")

    signal.connect(gone)
    del gone
    got.clear()
    signal.send(sender=None)
    assert got == ["second"]


def test_finalize_sends_the_app_signals_once(app: Taskq) -> None:
    got: list[tuple[str, Any]] = []

    @app.on_after_configure.connect
    def configured(sender: Taskq, source: Any, **kw: Any) -> None:
        got.append(("configure", source is sender.conf))

    @app.on_after_finalize.connect
    def finalized(sender: Taskq, **kw: Any) -> None:
        got.append(("finalize", sender is app))

    app.finalize()
    app.finalize()
    assert got == [("configure", True), ("finalize", True)]


def test_a_task_without_handlers_or_receivers_gets_no_hooks(
    app: Taskq, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskq import hooks
    from taskq.context import Context

    # Other modules' receivers are process-wide: this test watches a signal of its own.
    watched = signals.Signal("watched")
    monkeypatch.setattr(hooks, "_SIGNALS", (watched,))

    @app.task
    def bare() -> None: ...

    assert bare.hooks == frozenset() and hooks.for_run(bare, Context()) is None

    def receiver(**kw: Any) -> None: ...

    watched.connect(receiver)
    assert hooks.for_run(bare, Context()) is not None
