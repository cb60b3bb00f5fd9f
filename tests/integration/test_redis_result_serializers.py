"""Results in msgpack and pickle on a real Redis: the Redis backend's store script keeps a
stored success for each, a real taskq prefork worker stores them, and real Celery 5.7
workers and clients read and write the same bytes."""

from __future__ import annotations

import hashlib
import pickle
import threading
import uuid
from collections.abc import Iterator

import celery
import msgpack
import pytest
import redis

from taskq import chord, states
from taskq.backends import ResultCodec
from taskq.backends.codec import sniff
from taskq.backends.redis import RedisBackend
from taskq.exceptions import SecurityError
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.rser_tasks import make_celery, make_taskq
from tests.integration.test_celery_interop import CeleryWorkerProcess
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration

SERIALIZERS = ["msgpack", "pickle"]
PLAIN = {"msgpack": msgpack.unpackb, "pickle": pickle.loads}


@pytest.fixture
def client(redis_backend_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_backend_url)
    yield client
    client.close()


@pytest.fixture(params=SERIALIZERS)
def backend(request: pytest.FixtureRequest, redis_backend_url: str) -> Iterator[RedisBackend]:
    name = request.param
    made = RedisBackend(redis_backend_url, codec=ResultCodec(name, ["json", name]))
    yield made
    made.close()


def new_id() -> str:
    return f"rser-{uuid.uuid4()}"


def test_store_and_read_in_each_serializer(backend: RedisBackend, client: redis.Redis) -> None:
    tid = new_id()
    backend.store_result(tid, {"raw": b"\x00\xff", "n": [1, 2]}, states.SUCCESS)
    raw = client.get(backend.key_for(tid))
    assert raw is not None and sniff(raw) == backend.codec.name
    assert PLAIN[backend.codec.name](raw)["result"] == {"raw": b"\x00\xff", "n": [1, 2]}
    assert backend.get_task_meta(tid)["result"] == {"raw": b"\x00\xff", "n": [1, 2]}
    failed = new_id()
    backend.store_result(failed, KeyError("k"), states.FAILURE, "tb")
    meta = backend.get_task_meta(failed)
    result = meta["result"]
    if backend.codec.name == "pickle":
        assert isinstance(result, KeyError) and result.args == ("k",)
    else:
        assert result == {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}


def test_the_script_keeps_a_stored_success(backend: RedisBackend) -> None:
    # STARTED, then SUCCESS over it (for pickle: the script hands the STARTED value back,
    # Python reads it and writes by compare-and-set), then a duplicate run's FAILURE and
    # STARTED, which must not replace it.
    tid = new_id()
    backend.store_result(tid, {"pid": 1}, states.STARTED)
    backend.store_result(tid, 42, states.SUCCESS)
    backend.store_result(tid, RuntimeError("duplicate"), states.FAILURE)
    backend.store_result(tid, {"pid": 2}, states.STARTED)
    meta = backend.get_task_meta(tid)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 42)
    # The same with the replies read later (the worker's stores in flight).
    other = new_id()
    with backend.stores_in_flight() as failures:
        backend.store_result(other, {"pid": 1}, states.STARTED)
        backend.store_result(other, 43, states.SUCCESS)
        backend.store_result(other, RuntimeError("duplicate"), states.FAILURE)
    assert failures == {}
    assert backend.get_task_meta(other)["result"] == 43


def test_a_success_stored_between_the_read_and_the_write_is_kept(
    redis_backend_url: str, client: redis.Redis
) -> None:
    # The race compare-and-set closes: Python read STARTED, a duplicate stored SUCCESS
    # meanwhile; the write carrying STARTED's digest is refused, and the SUCCESS kept.
    backend = RedisBackend(redis_backend_url, codec=ResultCodec("pickle", ["pickle"]))
    tid = new_id()
    key = backend.key_for(tid)
    backend.store_result(tid, 1, states.STARTED)
    seen = client.get(key)
    assert seen is not None
    backend.store_result(tid, 2, states.SUCCESS)
    failure = backend.codec.encode(backend.make_meta(tid, 3, states.FAILURE, None, None))
    backend._store_checked(backend._thread_client(), (key, failure, "60"), seen)
    assert backend.get_task_meta(tid)["result"] == 2
    # And a write whose digest matches goes through (here: over a stored STARTED).
    started = new_id()
    backend.store_result(started, 1, states.STARTED)
    skey = backend.key_for(started)
    current = client.get(skey)
    assert current is not None
    done = backend.codec.encode(backend.make_meta(started, 5, states.SUCCESS, None, None))
    reply = backend._store(keys=[skey], args=[done, "60", hashlib.sha1(current).hexdigest()])
    assert reply == 1 and backend.get_task_meta(started)["result"] == 5
    backend.close()


def test_a_celery_pickled_success_is_kept(redis_url: str, redis_backend_url: str) -> None:
    capp = celery.Celery("w", broker=redis_url, backend=redis_backend_url, set_as_current=False)
    capp.conf.update(result_serializer="pickle", accept_content=["pickle", "json"])
    tid = new_id()
    capp.backend.store_result(tid, {"by": "celery"}, states.SUCCESS)
    backend = RedisBackend(redis_backend_url, codec=ResultCodec("pickle", ["json", "pickle"]))
    backend.store_result(tid, ValueError("late"), states.FAILURE)
    assert backend.get_task_meta(tid)["result"] == {"by": "celery"}
    # A JSON-only reader refuses it, and (unable to read it) does not take it for a success.
    reader = RedisBackend(redis_backend_url)
    with pytest.raises(SecurityError, match="in pickle"):
        reader.get_task_meta(tid)
    backend.close()
    reader.close()
    capp.close()


def test_a_wait_reads_the_published_value(backend: RedisBackend, client: redis.Redis) -> None:
    # The waiter passes the published bytes on as they are: pub/sub carries msgpack too.
    tid = new_id()
    channel = backend.key_for(tid)

    def store() -> None:
        wait_for(lambda: client.pubsub_numsub(channel)[0][1] == 1, 10, "the subscription")
        backend.store_result(tid, b"late", states.SUCCESS)

    thread = threading.Thread(target=store)
    thread.start()
    backend._local.subscribe_first = True  # subscribe before the first read
    meta = backend.wait_for(tid, timeout=20)
    thread.join()
    assert (meta["status"], meta["result"]) == (states.SUCCESS, b"late")


def test_a_prefork_worker_stores_msgpack_results(redis_url: str, redis_backend_url: str) -> None:
    queue = f"rser-{uuid.uuid4().hex[:6]}"
    settings = {
        "result_serializer": "msgpack",
        "accept_content": ["json", "msgpack"],
        "task_default_queue": queue,
    }
    app = make_app(redis_url, redis_backend_url, None, **settings)
    env = itest_env(redis_url, redis_backend_url, **settings)
    with WorkerProcess("tests.integration.worker_tasks", "-P", "prefork", "-c", "2", env=env):
        one = app.tasks["itest.add"].delay(2, 3)
        assert one.get(timeout=60) == 5
        failed = app.tasks["itest.fail"].delay("packed")
        with pytest.raises(ValueError, match="packed"):
            failed.get(timeout=60)
        joined = chord([app.tasks["itest.add"].s(i, i) for i in range(4)],
                       app.tasks["itest.tsum"].s()).apply_async()  # fmt: skip
        assert joined.get(timeout=60) == 12  # the join's entries in msgpack too
    raw = redis.Redis.from_url(redis_backend_url).get(app.backend.key_for(one.id))
    assert raw is not None and msgpack.unpackb(raw)["result"] == 5
    app.close()


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_celery_and_taskq_read_each_others_results(
    redis_url: str, redis_backend_url: str, serializer: str
) -> None:
    queue = f"rser-{serializer}-{uuid.uuid4().hex[:6]}"
    env = {
        "RSER_BROKER": redis_url,
        "RSER_BACKEND": redis_backend_url,
        "RSER_SERIALIZER": serializer,
        "RSER_QUEUE": queue,
        "TASKQ_BROKER_URL": "",
        "TASKQ_RESULT_BACKEND": "",
        # Celery refuses to run as root with pickle accepted (as in a CI container).
        "C_FORCE_ROOT": "1",
    }
    tq = make_taskq(redis_url, redis_backend_url, serializer, queue)
    capp = make_celery(redis_url, redis_backend_url, serializer, queue)
    args = ("-P", "prefork", "-c", "1", "-Q", queue)
    # A Celery worker stores; the taskq client reads (the value, and the exception).
    with CeleryWorkerProcess("tests.integration.rser_tasks", *args, env=env, ready_timeout=45):
        value = tq.send_task("rser.pack", (5,)).get(timeout=60)
        assert value == {"runner": "celery", "n": 5, "raw": b"\x05\x05\x05"}
        failed = tq.send_task("rser.boom")
        with pytest.raises(LookupError) as raised:
            failed.get(timeout=60)
        assert raised.value.args == ("celery", 7)
    # A taskq worker stores; Celery's client reads.
    with WorkerProcess("tests.integration.rser_tasks", *args, env=env, ready_timeout=45):
        sent = capp.send_task("rser.pack", (6,))
        assert sent.get(timeout=60) == {"runner": "taskq", "n": 6, "raw": b"\x06\x06\x06"}
        boom = capp.send_task("rser.boom")
        with pytest.raises(LookupError) as craised:
            boom.get(timeout=60)
        assert craised.value.args == ("taskq", 7)
    raw = redis.Redis.from_url(redis_backend_url).get(f"celery-task-meta-{sent.id}")
    assert raw is not None and sniff(raw) == serializer
    tq.close()
    capp.close()
