"""AsyncResult's Celery API, ResultSet and GroupResult, on the memory (and SQLite) backend.

No worker runs here: finished tasks are simulated by storing their metas directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu.utils.json import dumps, loads

import taskq
from taskq import (
    ChordError,
    GroupResult,
    NoBackendConfigured,
    ResultSet,
    Taskq,
    TimeoutError,
    states,
)
from taskq.backends import ResultContext
from taskq.backends.memory import MemoryBackend
from taskq.backends.sqlite import SqliteBackend
from taskq.context import Context
from taskq.result import AsyncResult, EagerResult, bind_group_result, result_from_tuple


@pytest.fixture
def backend(app: Taskq) -> MemoryBackend:
    assert isinstance(app.backend, MemoryBackend)
    return app.backend


def done(backend: MemoryBackend, task_id: str, value: Any = None) -> None:
    backend.store_result(task_id, value, states.SUCCESS)


def fail(backend: MemoryBackend, task_id: str, exc: BaseException) -> None:
    backend.store_result(task_id, exc, states.FAILURE, traceback="Traceback ...")


def later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# -- AsyncResult: children, parents, extended fields, date_done, tuples


def test_children_are_rebuilt_from_the_stored_meta(app: Taskq, backend: MemoryBackend) -> None:
    result = app.AsyncResult("parent-task")
    assert result.children is None  # nothing stored yet
    backend.store_result(
        "parent-task", 1, states.SUCCESS, context=ResultContext(children=("c1", "c2"))
    )
    children = result.children
    assert children == ["c1", "c2"]
    assert children is not None and all(type(c) is AsyncResult for c in children)
    done(backend, "c2", "two")
    assert children[1].get(timeout=1) == "two"  # bound to the same app and backend


def test_started_task_has_no_children_yet(app: Taskq, backend: MemoryBackend) -> None:
    backend.store_result("t", {"pid": 1}, states.STARTED)
    assert app.AsyncResult("t").children == []


def test_a_group_child_comes_back_as_a_group_result(app: Taskq, backend: MemoryBackend) -> None:
    meta = backend.make_meta("t", 1, states.SUCCESS, None, None)
    meta["children"] = [[["g", None], [[["m1", None], None]]]]
    backend._set(backend.key_for("t"), dumps(meta), states.SUCCESS)
    (child,) = app.AsyncResult("t").children or []
    assert isinstance(child, GroupResult) and child.id == "g" and child.results == ["m1"]


@pytest.mark.timeout(10)
def test_failed_parent_raises_before_waiting(app: Taskq, backend: MemoryBackend) -> None:
    parent = app.AsyncResult("p")
    child = AsyncResult[Any]("c", app=app, parent=parent)
    fail(backend, "p", ValueError("parent broke"))
    with pytest.raises(ValueError, match="parent broke"):
        child.get(timeout=5)


@pytest.mark.timeout(10)
def test_parent_failing_during_the_wait_ends_it(app: Taskq, backend: MemoryBackend) -> None:
    child = AsyncResult[Any]("c", app=app, parent=app.AsyncResult("p"))
    timer = later(0.1, lambda: fail(backend, "p", KeyError("late")))
    try:
        with pytest.raises(KeyError, match="late"):
            child.get(timeout=8, interval=0.05)
    finally:
        timer.cancel()


@pytest.mark.timeout(10)
def test_revoked_parent_raises_too(app: Taskq, backend: MemoryBackend) -> None:
    backend.store_result("p", taskq.TaskRevokedError("revoked"), states.REVOKED)
    child = AsyncResult[Any]("c", app=app, parent=app.AsyncResult("p"))
    with pytest.raises(taskq.TaskRevokedError):
        child.get(timeout=5)


@pytest.mark.timeout(10)
def test_oldest_failed_ancestor_wins(app: Taskq, backend: MemoryBackend) -> None:
    grandparent = app.AsyncResult("gp")
    parent = AsyncResult[Any]("p", app=app, parent=grandparent)
    child = AsyncResult[Any]("c", app=app, parent=parent)
    fail(backend, "gp", KeyError("root cause"))
    fail(backend, "p", ValueError("consequence"))
    with pytest.raises(KeyError, match="root cause"):
        child.get(timeout=5)


@pytest.mark.timeout(10)
def test_a_chord_body_answers_with_its_own_error_not_a_header_members(
    app: Taskq, backend: MemoryBackend
) -> None:
    # A group is the parent only of a chord's body, which always ends in a ChordError
    # naming the failed member: that is waited for, not the member's own error.
    group = GroupResult("g", [app.AsyncResult("m1"), app.AsyncResult("m2")], app=app)
    done(backend, "m1", 1)
    fail(backend, "m2", ValueError("member broke"))
    child = AsyncResult[Any]("c", app=app, parent=group)
    with pytest.raises(TimeoutError):
        child.get(timeout=0.3)
    fail(backend, "c", ChordError("Dependency m2 raised ValueError('member broke')"))
    with pytest.raises(ChordError, match="Dependency m2"):
        child.get(timeout=5)


@pytest.mark.timeout(10)
def test_parents_are_ignored_without_follow_parents_or_propagate(
    app: Taskq, backend: MemoryBackend
) -> None:
    fail(backend, "p", ValueError("parent broke"))
    child = AsyncResult[Any]("c", app=app, parent=app.AsyncResult("p"))
    with pytest.raises(TimeoutError):
        child.get(timeout=0.2, follow_parents=False)
    with pytest.raises(TimeoutError):
        child.get(timeout=0.2, propagate=False)
    done(backend, "c", "fine")
    assert child.get(timeout=1, follow_parents=False) == "fine"


@pytest.mark.timeout(10)
def test_timeouts_are_honoured_with_and_without_parents(app: Taskq, backend: MemoryBackend) -> None:
    with pytest.raises(TimeoutError):
        app.AsyncResult("never").get(timeout=0.2)
    done(backend, "p", 1)  # a parent that succeeded: the wait goes on, in slices
    child = AsyncResult[Any]("never", app=app, parent=app.AsyncResult("p"))
    with pytest.raises(TimeoutError):
        child.get(timeout=0.2, interval=0.05)
    with pytest.raises(TimeoutError):
        child.get(timeout=0)


@pytest.mark.timeout(10)
def test_child_with_a_healthy_parent_returns_its_value(app: Taskq, backend: MemoryBackend) -> None:
    child = AsyncResult[Any]("c", app=app, parent=app.AsyncResult("p"))
    timer = later(0.1, lambda: done(backend, "c", 42))
    try:
        assert child.get(timeout=8, interval=0.05) == 42
    finally:
        timer.cancel()


def test_date_done_is_an_aware_datetime(app: Taskq, backend: MemoryBackend) -> None:
    result = app.AsyncResult("t")
    assert result.date_done is None
    done(backend, "t", 1)
    when = result.date_done
    assert isinstance(when, datetime) and when.tzinfo is not None
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)


def test_naive_date_done_is_read_as_utc(app: Taskq, backend: MemoryBackend) -> None:
    meta = backend.make_meta("t", 1, states.SUCCESS, None, None)
    meta["date_done"] = "2024-05-06T07:08:09.123456"
    backend._set(backend.key_for("t"), dumps(meta), states.SUCCESS)
    assert app.AsyncResult("t").date_done == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def test_extended_fields_when_stored() -> None:
    backend = MemoryBackend(extended=True)
    context = ResultContext(
        name="proj.add", args=(1, 2), kwargs={"z": 3}, worker="w1@host", retries=2, queue="q1"
    )
    backend.store_result("t", 3, states.SUCCESS, context=context)
    result = AsyncResult[Any]("t", backend=backend)
    assert (result.name, result.args, result.kwargs) == ("proj.add", [1, 2], {"z": 3})
    assert (result.worker, result.retries, result.queue) == ("w1@host", 2, "q1")


def test_extended_fields_are_none_when_not_stored() -> None:
    backend = MemoryBackend(extended=False)
    backend.store_result("t", 3, states.SUCCESS, context=ResultContext(name="proj.add"))
    result = AsyncResult[Any]("t", backend=backend)
    fields = (result.name, result.args, result.kwargs, result.worker, result.retries, result.queue)
    assert fields == (None,) * 6


def test_as_tuple_and_as_list_follow_the_parents(app: Taskq) -> None:
    grandparent = app.AsyncResult("gp")
    child = AsyncResult[Any](
        "c", app=app, parent=AsyncResult[Any]("p", app=app, parent=grandparent)
    )
    assert child.as_tuple() == (("c", (("p", (("gp", None), None)), None)), None)
    assert child.as_list() == ["c", "p", "gp"]
    assert grandparent.as_tuple() == (("gp", None), None)


def test_waiting_inside_a_worker_task_is_refused(app: Taskq, backend: MemoryBackend) -> None:
    done(backend, "t", 1)
    result = app.AsyncResult("t")
    app.push_context(Context(id="running", is_eager=False))
    try:
        with pytest.raises(RuntimeError, match="inside a task"):
            result.get(timeout=1)
        with pytest.raises(RuntimeError, match="inside a task"):
            ResultSet([result]).join(timeout=1)
        assert result.get(timeout=1, disable_sync_subtasks=False) == 1
    finally:
        app.pop_context()
    app.push_context(Context(id="eager", is_eager=True))  # task.apply(): nothing to block
    try:
        assert result.get(timeout=1) == 1
    finally:
        app.pop_context()


def test_eager_result_takes_the_same_arguments(app: Taskq) -> None:
    ok = EagerResult[Any]("e1", 5, states.SUCCESS, app=app)
    assert ok.get(timeout=1, follow_parents=True, disable_sync_subtasks=True) == 5
    assert ok.parent is None and ok.children == []
    broken = EagerResult[Any]("e2", ValueError("x"), states.FAILURE, app=app)
    assert isinstance(broken.get(propagate=False), ValueError)


# -- ResultSet


def results(app: Taskq, *ids: str) -> list[AsyncResult[Any]]:
    return [app.AsyncResult(i) for i in ids]


def test_membership(app: Taskq) -> None:
    a, b, c = results(app, "a", "b", "c")
    rs = ResultSet([a, b], app=app)
    rs.add(app.AsyncResult("a"))  # already a member (same id)
    rs.add(c)
    assert list(rs) == [a, b, c] and len(rs) == 3 and rs[1] is b and rs[1:] == [b, c]
    rs.remove("b")
    assert rs.results == [a, c]
    with pytest.raises(KeyError):
        rs.remove(b)
    rs.discard(b)  # no error
    rs.update([b, c])
    assert rs.results == [a, c, b]
    assert rs == ResultSet(results(app, "a", "c", "b"))
    assert rs != ResultSet(results(app, "a", "b", "c"))
    rs.clear()
    assert len(rs) == 0 and rs.app is app
    assert repr(ResultSet([a, b])) == "<ResultSet: [a, b]>"


def test_state_questions(app: Taskq, backend: MemoryBackend) -> None:
    rs = ResultSet(results(app, "ok1", "ok2", "bad", "running"), app=app)
    assert (rs.ready(), rs.waiting(), rs.successful(), rs.failed()) == (False, True, False, False)
    assert rs.completed_count() == 0
    done(backend, "ok1", 1)
    done(backend, "ok2", 2)
    backend.store_result("running", None, states.STARTED)
    assert rs.completed_count() == 2 and not rs.failed()
    fail(backend, "bad", ValueError("x"))
    assert rs.failed() and not rs.successful() and not rs.ready() and rs.waiting()
    done(backend, "running", 3)
    assert rs.ready() and not rs.waiting() and rs.completed_count() == 3
    assert ResultSet(results(app, "ok1", "ok2")).successful()


def test_a_member_group_counts_as_one(app: Taskq, backend: MemoryBackend) -> None:
    inner = GroupResult("g", results(app, "m1", "m2"), app=app)
    rs = ResultSet([inner, app.AsyncResult("t")], app=app)
    done(backend, "m1", 1)
    done(backend, "t", 2)
    assert rs.completed_count() == 1 and not rs.ready()
    done(backend, "m2", 3)
    assert rs.completed_count() == 2 and rs.successful()
    assert rs.join(timeout=1) == [[1, 3], 2]


@pytest.mark.timeout(10)
def test_join_returns_values_in_member_order(app: Taskq, backend: MemoryBackend) -> None:
    rs = ResultSet(results(app, "a", "b", "c"), app=app)
    for task_id, value in (("c", 3), ("a", 1)):
        done(backend, task_id, value)
    timer = later(0.1, lambda: done(backend, "b", 2))
    try:
        assert rs.join(timeout=8) == [1, 2, 3]
    finally:
        timer.cancel()
    assert rs.get(timeout=1) == [1, 2, 3] and rs.join_native(timeout=1) == [1, 2, 3]
    seen: list[tuple[str, Any]] = []
    assert rs.join(timeout=1, callback=lambda i, v: seen.append((i, v))) == []
    assert seen == [("a", 1), ("b", 2), ("c", 3)]


@pytest.mark.timeout(10)
def test_join_propagates_the_first_failure(app: Taskq, backend: MemoryBackend) -> None:
    rs = ResultSet(results(app, "a", "b", "c", "d"), app=app)
    done(backend, "a", 1)
    fail(backend, "b", KeyError("first"))
    done(backend, "c", 3)
    fail(backend, "d", ValueError("second"))
    with pytest.raises(KeyError, match="first"):
        rs.join(timeout=5)
    values = rs.join(timeout=5, propagate=False)
    assert values[0] == 1 and values[2] == 3
    assert isinstance(values[1], KeyError) and isinstance(values[3], ValueError)


@pytest.mark.timeout(10)
def test_join_does_not_wait_for_others_once_a_member_failed(
    app: Taskq, backend: MemoryBackend
) -> None:
    rs = ResultSet(results(app, "never", "bad"), app=app)
    fail(backend, "bad", ValueError("x"))
    with pytest.raises(ValueError):
        rs.join(timeout=5)  # raises at once rather than timing out on "never"


@pytest.mark.timeout(10)
def test_join_honours_the_overall_timeout(app: Taskq, backend: MemoryBackend) -> None:
    rs = ResultSet(results(app, "a", "never", "b"), app=app)
    done(backend, "a", 1)
    done(backend, "b", 2)
    with pytest.raises(TimeoutError):
        rs.join(timeout=0.2)
    with pytest.raises(TimeoutError):
        rs.get(timeout=0)


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.waits = 0
        self.on_wait: Any = None

    def get_many(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        self.batches.append(len(task_ids))
        return super().get_many(task_ids)

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> Mapping[str, Any]:
        self.waits += 1
        if self.on_wait is not None:
            self.on_wait()  # the result lands only once someone waits for it
        return super().wait_for(task_id, timeout, interval)


@pytest.mark.timeout(30)
def test_join_of_a_large_set_reads_in_batches_and_waits_only_when_needed() -> None:
    backend = CountingBackend()
    for i in range(10_000):
        backend.store_result(f"t{i}", i, states.SUCCESS)
    members = [AsyncResult[Any](f"t{i}", backend=backend) for i in range(10_000)]
    members.append(AsyncResult[Any]("late", backend=backend))
    rs = ResultSet(members, backend=backend)
    backend.on_wait = lambda: later(0.05, lambda: backend.store_result("late", "last", "SUCCESS"))
    values = rs.join(timeout=20)
    backend.on_wait = None
    assert values == [*range(10_000), "last"]
    assert sum(backend.batches) == 10_001 and len(backend.batches) == 11
    assert backend.waits == 1  # only "late" was unfinished when its batch was read
    backend.batches.clear()
    assert rs.join(timeout=1)[-1] == "last" and backend.batches == [] and backend.waits == 1


def test_forget_deletes_every_member(app: Taskq, backend: MemoryBackend) -> None:
    done(backend, "a", 1)
    done(backend, "b", 2)
    ResultSet(results(app, "a", "b")).forget()
    assert [m["status"] for m in backend.get_many(["a", "b"])] == [states.PENDING] * 2


# -- GroupResult: save, restore, delete, tuples


def test_save_writes_celerys_document(app: Taskq, backend: MemoryBackend) -> None:
    group = GroupResult("g1", results(app, "t1", "t2"), app=app)
    assert group.save() is group
    raw = backend._get("celery-taskset-meta-g1")
    assert raw is not None
    assert loads(raw) == {"result": [["g1", None], [[["t1", None], None], [["t2", None], None]]]}
    assert raw == '{"result": [["g1", null], [[["t1", null], null], [["t2", null], null]]]}'


def test_save_restore_delete_round_trip(app: Taskq, backend: MemoryBackend) -> None:
    parent = app.AsyncResult("before")
    member = AsyncResult[Any]("t2", app=app, parent=app.AsyncResult("t2-parent"))
    group = GroupResult("g1", [app.AsyncResult("t1"), member], parent=parent, app=app)
    group.save()
    restored = GroupResult.restore("g1", app=app)
    assert restored == group and restored is not group
    assert restored.parent == parent and restored.results[1].parent == "t2-parent"
    assert restored.app is app and restored.as_tuple() == group.as_tuple()
    done(backend, "t1", "one")
    done(backend, "t2", "two")
    assert restored.get(timeout=1) == ["one", "two"]
    restored.delete()
    assert GroupResult.restore("g1", app=app) is None
    assert GroupResult.restore("never-saved", app=app) is None


def test_saved_group_expires_with_the_backend(app: Taskq) -> None:
    backend = MemoryBackend(expires=0.05)
    GroupResult("g", [AsyncResult("t", backend=backend)]).save(backend)
    assert GroupResult.restore("g", backend=backend) is not None
    threading.Event().wait(0.1)
    assert GroupResult.restore("g", backend=backend) is None


def test_group_key_follows_the_global_prefix() -> None:
    backend = MemoryBackend()
    backend.key_prefix = "proj:celery-task-meta-"  # as RedisBackend sets global_keyprefix
    assert backend.group_key_for("g") == "proj:celery-taskset-meta-g"


def test_save_without_a_backend_is_refused() -> None:
    app = Taskq("t", broker="memory://")
    with pytest.raises(NoBackendConfigured):
        GroupResult("g", [app.AsyncResult("t")], app=app).save()
    with pytest.raises(NoBackendConfigured):
        GroupResult.restore("g", app=app)


def test_save_and_restore_on_sqlite(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "results.db"))
    try:
        group = GroupResult("g", [AsyncResult("t1", backend=backend)], backend=backend)
        group.save()
        raw = backend._get("celery-taskset-meta-g")
        assert raw is not None and loads(raw) == {"result": [["g", None], [[["t1", None], None]]]}
        other = SqliteBackend(str(tmp_path / "results.db"))  # another process's view
        restored = GroupResult.restore("g", backend=other)
        assert restored == group and restored is not None and restored.backend is other
        group.delete()
        assert GroupResult.restore("g", backend=other) is None
        other.close()
    finally:
        backend.close()


def test_group_equality_repr_and_children(app: Taskq) -> None:
    group = GroupResult("g", results(app, "a", "b"), app=app)
    assert group == GroupResult("g", results(app, "a", "b"))
    assert group != GroupResult("g", results(app, "a"))
    assert group != GroupResult("h", results(app, "a", "b"))
    assert group != GroupResult("g", results(app, "a", "b"), parent=app.AsyncResult("p"))
    assert group == "g" and str(group) == "g" and hash(group) == hash("g")
    assert repr(group) == "<GroupResult: g [a, b]>"
    assert group.children is group.results
    assert group.as_tuple() == (("g", None), [(("a", None), None), (("b", None), None)])


def test_app_bound_group_result_class(app: Taskq, backend: MemoryBackend) -> None:
    AppGroupResult = bind_group_result(app)
    group = AppGroupResult("g", results(app, "a"))
    assert group.app is app and isinstance(group, GroupResult)
    assert repr(group) == "<GroupResult: g [a]>"
    group.save()
    restored = AppGroupResult.restore("g")
    assert restored == group and restored is not None and restored.app is app


# -- result_from_tuple


def test_result_from_tuple_rebuilds_nesting(app: Taskq) -> None:
    stored: Any = loads(
        dumps(
            [
                ["g", [["p", [["pp", None], None]], None]],
                [[["m1", None], None], [["inner", None], [[["m2", [["m2p", None], None]], None]]]],
            ]
        )
    )
    group = result_from_tuple(stored, app)
    assert isinstance(group, GroupResult) and group.id == "g"
    assert isinstance(group.parent, AsyncResult) and group.parent.id == "p"
    assert group.parent.parent == "pp" and group.parent.parent.parent is None
    m1, inner = group.results
    assert type(m1) is AsyncResult and m1.parent is None
    assert isinstance(inner, GroupResult) and inner.results == ["m2"]
    assert inner.results[0].parent == "m2p"
    assert loads(dumps(group.as_tuple())) == stored


def test_result_from_tuple_simple_forms(app: Taskq) -> None:
    plain = result_from_tuple([["t", None], None], app)
    assert type(plain) is AsyncResult and plain.id == "t" and plain.app is app
    bare = result_from_tuple(["t", None], app)  # an id alone where [id, parent] goes
    assert type(bare) is AsyncResult and bare.id == "t" and bare.parent is None
    assert result_from_tuple(plain, app) is plain
    with pytest.raises(ValueError):
        result_from_tuple(["only-one-element"], app)
    with pytest.raises(ValueError):
        result_from_tuple([[1, None], None], app)


def _iter_parents(result: Any) -> Iterator[str]:
    while result is not None:
        yield result.id
        result = result.parent


def test_children_with_parents_round_trip_through_meta(app: Taskq, backend: MemoryBackend) -> None:
    child = AsyncResult[Any](
        "c", app=app, parent=AsyncResult[Any]("b", app=app, parent=app.AsyncResult("a"))
    )
    meta = backend.make_meta("t", 1, states.SUCCESS, None, None)
    meta["children"] = [child.as_tuple()]
    backend._set(backend.key_for("t"), dumps(meta), states.SUCCESS)
    (restored,) = app.AsyncResult("t").children or []
    assert list(_iter_parents(restored)) == ["c", "b", "a"]
