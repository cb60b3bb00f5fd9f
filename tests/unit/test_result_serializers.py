"""Results in json, msgpack and pickle (result_serializer, result_accept_content) on the
memory and SQLite backends: the bytes stored, round trips, the accept rule, and the rule
that a stored success is kept."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from taskq import Taskq, states
from taskq.backends import Backend, ResultCodec
from taskq.backends.codec import sniff
from taskq.backends.memory import MemoryBackend
from taskq.backends.sqlite import SqliteBackend
from taskq.exceptions import (
    BackendError,
    ConfigurationError,
    RemoteError,
    SecurityError,
    TaskRevokedError,
)
from taskq.result import AsyncResult

SERIALIZERS = ["json", "msgpack", "pickle"]


class Unpicklable(Exception):
    """An exception whose __init__ needs two arguments: a pickle round trip fails."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(f"{a}-{b}")


def codec(name: str) -> ResultCodec:
    return ResultCodec(name, ["json", name])


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SERIALIZERS)
def backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Backend]:
    made = make(kind, request.param, tmp_path)
    yield made
    made.close()


def make(kind: str, serializer: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend(codec=codec(serializer))
    return SqliteBackend(str(tmp_path / "results.db"), codec=codec(serializer))


def stored(backend: Backend, task_id: str) -> bytes | str:
    raw = backend._get(backend.key_for(task_id))
    assert raw is not None
    return raw


def test_values_round_trip_in_each_serializer(backend: Backend) -> None:
    value = {"n": 1, "text": "héllo", "list": [1.5, None, True], "nested": {"a": [1, 2]}}
    backend.store_result("t1", value, states.SUCCESS)
    meta = backend.get_task_meta("t1")
    assert (meta["status"], meta["result"], meta["task_id"]) == (states.SUCCESS, value, "t1")
    # The bytes are the serializer's own, with no mark, as Celery stores them.
    raw = stored(backend, "t1")
    name = backend.codec.name
    assert sniff(raw) == name
    plain = {"json": json.loads, "msgpack": msgpack.unpackb, "pickle": pickle.loads}[name]
    assert plain(raw)["result"] == value


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_bytes_survive_where_json_cannot_carry_them(serializer: str, tmp_path: Path) -> None:
    backend = make("sqlite", serializer, tmp_path)
    backend.store_result("t1", b"\x00\xff raw", states.SUCCESS)
    assert backend.get_task_meta("t1")["result"] == b"\x00\xff raw"


def test_exceptions_round_trip_in_each_serializer(backend: Backend, app: Taskq) -> None:
    backend.store_result("e1", ValueError("boom", 42), states.FAILURE, "Traceback...")
    backend.store_result("e2", TaskRevokedError("revoked"), states.REVOKED)
    backend.store_result("e3", Unpicklable(1, 2), states.FAILURE)
    one = AsyncResult("e1", backend=backend, app=app)
    assert isinstance(one.result, ValueError) and one.result.args == ("boom", 42)
    assert one.traceback == "Traceback..."
    two = AsyncResult("e2", backend=backend, app=app).result
    assert isinstance(two, TaskRevokedError) and two.args == ("revoked",)
    three = AsyncResult("e3", backend=backend, app=app).result
    assert isinstance(three, Unpicklable | RemoteError)  # rebuilt bare, or named only
    assert "1-2" in str(three.args)


def test_pickle_stores_the_exception_itself_as_celery_does(tmp_path: Path) -> None:
    backend = make("memory", "pickle", tmp_path)
    backend.store_result("e1", KeyError("k"), states.FAILURE)
    backend.store_result("e2", TaskRevokedError("expired"), states.REVOKED)
    backend.store_result("e3", Unpicklable(1, 2), states.FAILURE)
    first = pickle.loads(stored(backend, "e1"))["result"]  # type: ignore[arg-type]
    assert isinstance(first, KeyError) and first.args == ("k",)
    # Celery's reader rebuilds its own class from the dict; a Celery pickle of it would
    # need taskq installed there.
    shared = pickle.loads(stored(backend, "e2"))["result"]  # type: ignore[arg-type]
    assert shared == {
        "exc_type": "TaskRevokedError",
        "exc_message": ["expired"],
        "exc_module": "celery.exceptions",
    }
    assert pickle.loads(stored(backend, "e3"))["result"]["exc_type"] == "Unpicklable"  # type: ignore[arg-type]


def test_a_stored_success_is_kept_against_a_later_failure(backend: Backend) -> None:
    backend.store_result("dup", 7, states.STARTED)
    backend.store_result("dup", 8, states.SUCCESS)
    backend.store_result("dup", RuntimeError("late duplicate"), states.FAILURE)
    backend.store_result("dup", {"pid": 1}, states.STARTED)
    meta = backend.get_task_meta("dup")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 8)


def test_saved_groups_use_the_serializer(backend: Backend) -> None:
    tup = [["g1", None], [[["a", None], None], [["b", None], None]]]
    backend.save_group("g1", tup)
    assert sniff(backend._get(backend.group_key_for("g1")) or b"") == backend.codec.name
    restored = backend.restore_group("g1")
    assert restored is not None and json.loads(json.dumps(restored)) == tup


def test_pickle_is_refused_unless_accepted() -> None:
    with pytest.raises(ConfigurationError, match=r"result_accept_content .* to name 'pickle'"):
        ResultCodec("pickle", ["json"])
    with pytest.raises(ConfigurationError, match="to name 'pickle'"):
        ResultCodec("application/x-python-serialize")  # content types name them too
    assert ResultCodec("application/x-python-serialize", ["pickle"]).name == "pickle"


def test_the_app_applies_the_result_accept_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    # result_accept_content unset: accept_content decides, as in Celery.
    refused = Taskq("p", broker="memory://", backend=url, result_serializer="pickle")
    with pytest.raises(ConfigurationError, match="to name 'pickle'"):
        refused.backend  # noqa: B018
    ok = Taskq("p", broker="memory://", backend=url, result_serializer="pickle",
               accept_content=["json", "pickle"])  # fmt: skip
    assert ok.backend.codec.name == "pickle"
    # result_accept_content, when set, wins over accept_content.
    own = Taskq("p", broker="memory://", backend=url, result_serializer="pickle",
                accept_content=["json", "pickle"], result_accept_content=["json"])  # fmt: skip
    with pytest.raises(ConfigurationError, match="to name 'pickle'"):
        own.backend  # noqa: B018
    # A format that runs no code is read where it is written, named or not.
    msgpack = Taskq("p", broker="memory://", backend=url, result_serializer="msgpack")
    assert msgpack.backend.codec.accepted == {"json", "msgpack"}


def test_a_format_not_accepted_is_refused_on_read(tmp_path: Path) -> None:
    writer = make("sqlite", "pickle", tmp_path)
    writer.store_result("p1", 1, states.SUCCESS)
    reader = SqliteBackend(str(tmp_path / "results.db"))  # json only: the defaults
    with pytest.raises(SecurityError, match="in pickle, which result_accept_content"):
        reader.get_task_meta("p1")
    # Nothing of the pickle ran: its status is not even read to keep a success.
    reader.store_result("p1", 2, states.SUCCESS)
    assert reader.get_task_meta("p1")["result"] == 2


def test_another_accepted_format_is_read_by_its_first_bytes(tmp_path: Path) -> None:
    # A fleet moving from JSON to msgpack: the old results stay readable.
    make("sqlite", "json", tmp_path).store_result("old", [1, 2], states.SUCCESS)
    reader = SqliteBackend(str(tmp_path / "results.db"), codec=ResultCodec("msgpack", SERIALIZERS))
    assert reader.get_task_meta("old")["result"] == [1, 2]
    reader.store_result("new", [3], states.SUCCESS)
    old_reader = SqliteBackend(str(tmp_path / "results.db"), codec=ResultCodec("json", SERIALIZERS))
    assert old_reader.get_task_meta("new")["result"] == [3]


def test_unreadable_bytes_are_a_backend_error(tmp_path: Path) -> None:
    backend = make("memory", "msgpack", tmp_path)
    backend._set(backend.key_for("x"), b"\x01\x02", states.SUCCESS)
    with pytest.raises(BackendError, match="cannot be read"):
        backend.get_task_meta("x")


def test_msgpack_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "msgpack", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'taskq\[msgpack\]'"):
        ResultCodec("msgpack", ["msgpack"])


def test_celerys_wrapper_of_an_unpicklable_exception_is_rebuilt() -> None:
    # What Celery stores under pickle for an exception that would not pickle: its wrapper
    # class, here rebuilt as the exception it names (args: module, name, args, text).
    from celery.utils.serialization import UnpickleableExceptionWrapper

    wrapped = UnpickleableExceptionWrapper("builtins", "ValueError", ("bad", 1), "ValueError()")
    raw = pickle.dumps({"status": states.FAILURE, "result": wrapped}, protocol=4)
    meta = ResultCodec("pickle", ["pickle"]).decode(raw)
    assert isinstance(meta["result"], ValueError) and meta["result"].args == ("bad", 1)


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_a_worker_runs_a_chord_with_results_in_the_serializer(
    serializer: str, tmp_path: Path, run_worker: Any, app: Taskq
) -> None:
    # The join's entries are in the result serializer too (Celery's), so a chord of bytes
    # joins, and a member's failure reaches the body's result as a ChordError.
    from taskq import ChordError, chord

    app.conf.update(
        result_backend=f"sqlite:///{tmp_path}/chord.db",
        result_serializer=serializer,
        accept_content=["json", serializer],
    )

    @app.task(name="rs.raw")
    def raw(n: int) -> bytes:
        return bytes([n])

    @app.task(name="rs.join")
    def join(parts: list[bytes]) -> bytes:
        return b"".join(parts)

    @app.task(name="rs.fail")
    def fail() -> None:
        raise KeyError("member")

    run_worker()
    assert chord([raw.s(1), raw.s(2), raw.s(3)], join.s()).apply_async().get(timeout=30) == (
        b"\x01\x02\x03"
    )
    with pytest.raises(ChordError, match="KeyError"):
        chord([raw.s(1), fail.s()], join.s()).apply_async().get(timeout=30)
    assert isinstance(app.backend, SqliteBackend)
    one = raw.delay(9)
    assert one.get(timeout=30) == b"\x09"
    assert sniff(stored(app.backend, one.id)) == serializer
