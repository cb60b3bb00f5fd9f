"""The remote-control client, ``app.control``, against stand-in workers.

The stand-ins (tests/unit/pidbox_workers.py) are kombu's own pidbox node answering with a
real Celery 5.7 worker's replies. Request bodies are compared with those Celery's own client
sends for the same call, to the same stand-in, so every command's arguments are Celery's to
the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery  # type: ignore[import-untyped]  # a test-only dependency
import pytest

from taskq import AsyncResult, BrokerUnavailable, ConfigurationError, GroupResult, ResultSet, Taskq
from taskq.control import DuplicateNodenameWarning, flatten_reply
from tests.unit.pidbox_workers import CANNED, CAPTURE, CAPTURED_NODE, WAIT, Workers


@pytest.fixture
def workers() -> Iterator[Workers]:
    started = Workers()
    yield started
    started.stop()


@pytest.fixture
def app() -> Iterator[Taskq]:
    app = Taskq("t", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def celery_app() -> Iterator[Any]:
    capp = celery.Celery("t", broker="memory://", set_as_current=False)
    # As taskq's client has it: kombu's memory transport otherwise polls once a second.
    capp.conf.broker_transport_options = {"polling_interval": 0.01}
    yield capp
    capp.close()


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its random parts (ticket, reply routing key) checked and replaced."""
    body = dict(body)
    if "ticket" in body:
        uuid.UUID(body["ticket"])
        body["ticket"] = "<ticket>"
        reply_to = dict(body["reply_to"])
        uuid.UUID(reply_to["routing_key"])
        body["reply_to"] = {**reply_to, "routing_key": "<oid>"}
    return body


# (call, expects a reply): made on taskq's app.control and on Celery's, in the same words.
CALLS: dict[str, tuple[Any, bool]] = {
    "ping": (lambda c, d: c.ping(destination=d, timeout=WAIT), True),
    "revoke": (lambda c, d: c.revoke("t-1", destination=d), False),
    "revoke many, terminate": (
        lambda c, d: c.revoke(["t-1", "t-2"], d, terminate=True, signal="SIGKILL"),
        False,
    ),
    "revoke with reply": (lambda c, d: c.revoke("t-1", d, reply=True, timeout=WAIT), True),
    "terminate": (lambda c, d: c.terminate("t-1", destination=d), False),
    "revoke by stamped headers": (
        lambda c, d: c.revoke_by_stamped_headers({"stamp": "a"}, destination=d),
        False,
    ),
    "rate_limit": (lambda c, d: c.rate_limit("proj.add", "10/s", destination=d), False),
    "time_limit": (lambda c, d: c.time_limit("proj.add", soft=10, hard=20, destination=d), False),
    "time_limit soft only": (lambda c, d: c.time_limit("proj.add", 5, destination=d), False),
    "shutdown": (lambda c, d: c.shutdown(destination=d), False),
    "pool_grow": (lambda c, d: c.pool_grow(2, destination=d), False),
    "pool_shrink": (lambda c, d: c.pool_shrink(destination=d), False),
    "autoscale": (lambda c, d: c.autoscale(8, 2, destination=d), False),
    "add_consumer": (lambda c, d: c.add_consumer("q1", destination=d), False),
    "add_consumer with options": (
        lambda c, d: c.add_consumer(
            "q1", "ex", "topic", "k.#", options={"queue_durable": False}, destination=d
        ),
        False,
    ),
    "cancel_consumer": (lambda c, d: c.cancel_consumer("q1", destination=d), False),
    "enable_events": (lambda c, d: c.enable_events(destination=d), False),
    "disable_events": (lambda c, d: c.disable_events(destination=d), False),
    "heartbeat": (lambda c, d: c.heartbeat(destination=d), False),
    "broadcast with extra arguments": (
        lambda c, d: c.broadcast("custom", arguments={"a": 1}, destination=d, b=2),
        False,
    ),
    "broadcast by pattern": (
        lambda c, d: c.broadcast("custom", pattern=d[0], matcher="glob"),
        False,
    ),
    **{
        f"inspect {name}": (
            lambda c, d, call=call: call(c.inspect(destination=d, timeout=WAIT)),
            True,
        )
        for name, call in {
            "ping": lambda i: i.ping(),
            "active": lambda i: i.active(),
            "active safe": lambda i: i.active(safe=True),
            "reserved": lambda i: i.reserved(),
            "scheduled": lambda i: i.scheduled(),
            "registered": lambda i: i.registered(),
            "registered with items": lambda i: i.registered("rate_limit", "acks_late"),
            "stats": lambda i: i.stats(),
            "revoked": lambda i: i.revoked(),
            "active_queues": lambda i: i.active_queues(),
            "conf": lambda i: i.conf(),
            "conf with defaults": lambda i: i.conf(with_defaults=True),
            "query_task": lambda i: i.query_task("t-1", "t-2"),
            "query_task as a list": lambda i: i.query_task(["t-1"]),
            "report": lambda i: i.report(),
            "clock": lambda i: i.clock(),
        }.items()
    },
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_request_is_the_one_celery_sends(
    case: str, app: Taskq, celery_app: Any, workers: Any
) -> None:
    call, wants_reply = CALLS[case]
    worker = workers()
    destination = [worker.hostname]
    call(app.control, destination)
    ours = worker.request(count=1)
    call(celery_app.control, destination)
    theirs = worker.request(count=2)
    assert normalized(ours.body) == normalized(theirs.body)
    assert ("ticket" in ours.body) is wants_reply
    assert ours.exchange == theirs.exchange == "celery.pidbox"
    assert set(ours.headers) == set(theirs.headers) == {"clock", "expires"}


def test_revoke_request_as_captured(app: Taskq, workers: Any) -> None:
    # The revoke of the capture's task, in the fields a Celery 5.7 client sent for it.
    worker = workers(CAPTURED_NODE)
    replies = app.control.revoke(CAPTURE["revoke_id"], reply=True, timeout=WAIT, limit=1)
    body = worker.request().body
    assert body["method"] == "revoke"
    assert body["arguments"] == {
        "task_id": CAPTURE["revoke_id"],
        "terminate": False,
        "signal": "SIGTERM",
    }
    assert (body["destination"], body["pattern"], body["matcher"]) == (None, None, None)
    assert body["reply_to"]["exchange"] == "reply.celery.pidbox"
    assert replies == CAPTURE["revoke_reply"]


@pytest.mark.parametrize(
    "verb", ["active", "registered", "stats", "scheduled", "reserved", "revoked"]
)
def test_inspect_gives_replies_by_node_as_celery_does(verb: str, app: Taskq, workers: Any) -> None:
    workers(CAPTURED_NODE)
    inspect = app.control.inspect(timeout=WAIT, limit=1)
    assert getattr(inspect, verb)() == CAPTURE[verb]


def test_ping_and_query_task_as_captured(app: Taskq, workers: Any) -> None:
    workers(CAPTURED_NODE)
    assert app.control.ping(timeout=WAIT, limit=1) == CAPTURE["ping"]
    assert app.control.ping([CAPTURED_NODE], timeout=WAIT) == CAPTURE["ping_dest"]
    inspect = app.control.inspect([CAPTURED_NODE], timeout=WAIT)
    assert inspect.query_task(CAPTURE["revoke_id"]) == CAPTURE["query_task"]


def test_replies_are_collected_from_every_node_up_to_the_limit(app: Taskq, workers: Any) -> None:
    a, b = workers(), workers()
    both = app.control.inspect(timeout=WAIT, limit=2).ping()
    assert both == {a.hostname: {"ok": "pong"}, b.hostname: {"ok": "pong"}}
    seen: list[dict[str, Any]] = []
    one = app.control.ping(timeout=WAIT, limit=1, callback=seen.append)
    assert one is not None and len(one) == 1 and seen == one
    # The other node's late answer goes out before the next request: kombu's memory broker
    # is one per process, its state shared by these threads, and a fresh-clone run once
    # lost the next reply (stats) while this one was still on its way.
    a.wait_handled(2)
    b.wait_handled(2)
    # A destination sets the limit: the call returns once that node has answered.
    assert app.control.inspect([b.hostname], timeout=WAIT).stats() == {b.hostname: CANNED["stats"]}
    # Every node receives every request; kombu's node acts on those addressed to it.
    assert a.request(count=3).body["destination"] == [b.hostname]


def test_pattern_picks_nodes_by_name(app: Taskq, workers: Any) -> None:
    keep = workers(f"keep-{uuid.uuid4().hex[:6]}@test")
    workers(f"skip-{uuid.uuid4().hex[:6]}@test")
    inspect = app.control.inspect(timeout=WAIT, limit=1, pattern="keep-*", matcher="glob")
    assert inspect.ping() == {keep.hostname: {"ok": "pong"}}


def test_no_reply_within_the_timeout(app: Taskq, workers: Any) -> None:
    workers()
    assert app.control.inspect(["nobody@nowhere"], timeout=0.2).ping() is None
    assert app.control.ping(["nobody@nowhere"], timeout=0.2) == []
    assert app.control.revoke("t-1") is None  # a cast: nothing to wait for


def test_results_revoke_through_the_control_client(app: Taskq, workers: Any) -> None:
    worker = workers()
    AsyncResult("t-1", app=app).revoke()
    assert worker.request().body["arguments"] == {
        "task_id": "t-1", "terminate": False, "signal": None,  # as Celery: None goes as is
    }  # fmt: skip
    # With no limit the wait lasts until replies stop for `timeout`: keep it short.
    AsyncResult("t-2", app=app).revoke(terminate=True, signal="SIGKILL", wait=True, timeout=0.2)
    sent = worker.request(count=2).body
    assert sent["arguments"] == {"task_id": "t-2", "terminate": True, "signal": "SIGKILL"}
    assert "ticket" in sent
    inner = GroupResult("g-2", [AsyncResult("t-4", app=app)], app=app)
    group = GroupResult("g-1", [AsyncResult("t-3", app=app), inner], app=app)
    group.revoke()
    assert worker.request(count=3).body["arguments"]["task_id"] == ["t-3", "t-4"]
    ResultSet([AsyncResult("t-5", app=app), AsyncResult("t-6", app=app)]).revoke()
    assert worker.request(count=4).body["arguments"]["task_id"] == ["t-5", "t-6"]


def test_mailbox_is_configured_as_celerys(app: Taskq, celery_app: Any) -> None:
    ours, theirs = app.control.mailbox, celery_app.control.mailbox
    same = ("namespace", "type", "serializer", "queue_ttl", "queue_expires", "reply_queue_ttl",
            "reply_queue_expires", "queue_durable", "queue_exclusive")  # fmt: skip
    for attr in same:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    for get in (lambda m: m.exchange, lambda m: m.reply_exchange):
        assert (get(ours).name, get(ours).type, get(ours).durable) == (
            get(theirs).name, get(theirs).type, get(theirs).durable,
        )  # fmt: skip
    q_ours, q_theirs = ours.get_queue("n@h"), theirs.get_queue("n@h")
    assert (q_ours.name, q_ours.expires, q_ours.message_ttl, q_ours.exclusive) == (
        q_theirs.name, q_theirs.expires, q_theirs.message_ttl, q_theirs.exclusive,
    )  # fmt: skip


def test_control_exchange_setting_names_the_mailbox(workers: Any) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    worker = workers(exchange=name)
    app = Taskq("t", broker="memory://", control_exchange=name)
    assert app.control.ping(timeout=WAIT, limit=1) == [{worker.hostname: {"ok": "pong"}}]
    assert worker.request().exchange == f"{name}.pidbox"
    assert worker.request().body["reply_to"]["exchange"] == f"reply.{name}.pidbox"


def test_durable_exclusive_control_queues_are_refused() -> None:
    app = Taskq("t", broker="memory://", control_queue_durable=True)
    with pytest.raises(ConfigurationError, match="control_queue_exclusive"):
        app.control  # noqa: B018


def test_destination_must_be_a_list(app: Taskq) -> None:
    with pytest.raises(ValueError, match="list of node names"):
        app.control.ping(destination="w1@vm")  # type: ignore[arg-type]


def test_unreachable_broker_is_one_clear_error() -> None:
    app = Taskq("t", broker="redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(BrokerUnavailable, match=r"redis://:\*+@127\.0\.0\.1:1/0") as exc:
        app.control.inspect().ping()
    assert "s3cret" not in str(exc.value)


def test_embedded_broker_says_it_cannot_reach_workers(tmp_path: Path) -> None:
    app = Taskq("t", embedded_data_dir=str(tmp_path))  # SQLite: no fanout exchanges
    with pytest.raises(ConfigurationError, match="needs a broker with fanout exchanges"):
        app.control.ping()
    app.close()


def test_duplicate_node_names_warn() -> None:
    with pytest.warns(DuplicateNodenameWarning, match="w1@vm"):
        merged = flatten_reply([{"w1@vm": 1}, {"w2@vm": 2}, {"w1@vm": 3}])
    assert merged == {"w1@vm": 3, "w2@vm": 2}
