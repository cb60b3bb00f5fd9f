"""The client's direct publish on a real Redis: dropped connections and forked children."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis

from taskq import BrokerUnavailable, Taskq
from taskq.redis_direct import DEFAULT_SPIN
from tests.integration.helpers import connections_received
from tests.integration.worker_tasks import make_app
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _app(redis_url: str) -> tuple[Taskq, str]:
    queue = f"pub-{uuid.uuid4().hex[:8]}"
    app = Taskq("pub", broker=redis_url, task_default_queue=queue)

    @app.task(name="pub.noop")
    def noop(i: int) -> None:
        return None

    return app, queue


def test_a_publish_after_the_server_dropped_the_connection_goes_through_once(
    redis_url: str,
) -> None:
    app, queue = _app(redis_url)
    server = redis.Redis.from_url(redis_url)
    noop = app.tasks["pub.noop"]
    noop.delay(0)
    # Drop every client connection but this one: the publisher's idle channel is now dead.
    server.client_kill_filter(_type="normal", skipme=True)
    for i in range(1, 4):
        noop.delay(i)
    assert server.llen(queue) == 4
    app.close()


def test_a_forked_child_publishes_on_its_own_connection(redis_url: str) -> None:
    app, queue = _app(redis_url)
    server = redis.Redis.from_url(redis_url)
    noop = app.tasks["pub.noop"]
    noop.delay(0)  # the parent now holds an idle channel, which the child inherits
    before_fork = connections_received(server)
    pid = os.fork()
    if pid == 0:  # the child: publish, then leave without running any cleanup
        try:
            noop.delay(1)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after_child = connections_received(server)
    assert after_child > before_fork  # the child did not write on its parent's socket
    noop.delay(2)
    # Nor did it close that socket: the parent publishes without reconnecting.
    assert connections_received(server) == after_child
    assert server.llen(queue) == 3
    app.close()


def test_an_error_reply_fails_that_publish_alone(
    redis_url: str,
) -> None:
    app, queue = _app(redis_url)
    server = redis.Redis.from_url(redis_url)
    noop = app.tasks["pub.noop"]
    server.set(queue, "not a list")  # LPUSH onto it gets Redis's WRONGTYPE error
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        noop.delay(0)
    server.delete(queue)
    noop.delay(1)
    noop.delay(2)
    assert [server.lpop(queue) is not None for _ in range(3)] == [True, True, False]
    app.close()


def test_a_key_prefix_applies_to_the_queue_a_delay_goes_to(redis_url: str) -> None:
    app, queue = _app(redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": "pfx_"}
    server = redis.Redis.from_url(redis_url)
    app.tasks["pub.noop"].delay(0)
    assert server.llen("pfx_" + queue) == 1  # where kombu, and so Celery, publish it
    assert not server.exists(queue)
    with app.connection() as conn:  # and where a consumer with that prefix takes it from
        message = conn.default_channel.basic_get(queue, no_ack=True)
    assert message is not None and message.headers["task"] == "pub.noop"
    app.close()


def test_a_publish_polls_for_its_reply_on_the_connection_it_sent_on(redis_url: str) -> None:
    # How fast a delay() is, the benchmark measures; this checks that the publish goes
    # through the channel's ReplyWait at all, and that the wait watches the right socket.
    app, _ = _app(redis_url)
    app.tasks["pub.noop"].delay(0)
    _, channel = app.amqp.publisher._idle[-1]
    client, _, wait = channel._direct()
    assert wait.limit == DEFAULT_SPIN and wait.spinning
    assert client.connection._sock is not None and wait._sock is client.connection._sock
    app.close()


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_delay_to_a_closed_port_gives_up_within_the_retry_policy(scheme: str) -> None:
    # One direct attempt, then task_publish_retry_policy (3 retries, 0.4 s of pauses):
    # a refused connection costs no more. kombu's own retries used to add 6 s.
    url = f"{scheme}://guest:guest@127.0.0.1:{free_port()}/" + ("0" if scheme == "redis" else "/")
    app = make_app(url, None, None)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="Check that the broker is running"):
        app.tasks["itest.add"].delay(1, 2)
    took = time.monotonic() - started
    app.close()
    assert took < 3.0, took  # 0.4 s by design; the margin is for a slow machine
