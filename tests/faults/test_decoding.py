"""Hypothesis: no message, however malformed, escapes the worker's per-message handler.

A real Consumer (built by a real Worker's options, solo pool) consumes from kombu's
in-process memory:// broker. Hypothesis publishes arbitrary headers, bodies, content
types and encodings at the channel level (so even a missing content type gets through),
and the consumer's connection delivers each one to its handler. The properties:

- nothing raises out of ``drain_events`` (that is, out of the handler);
- every message is either settled (acked, dead-lettered) or held by a request of the
  consumer: none is left unacked with nobody responsible for it, which would leak a
  prefetch slot for good.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from taskq import Taskq
from taskq.message import TaskMessage, to_headers
from taskq.worker.consumer import Consumer
from taskq.worker.worker import POOLS, Worker, WorkerOptions
from tests.faults.fault_tasks import WORK, register
from tests.faults.report import Results

pytestmark = [pytest.mark.faults]

EXAMPLES = 400
MAX_MESSAGE_SIZE = 512  # small, so that generated bodies cross it

# -- what Hypothesis generates

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
iso_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat())
soon = st.floats(min_value=-5, max_value=5).map(
    lambda s: (datetime.now(UTC) + timedelta(seconds=s)).isoformat()
)
header_values = {
    "task": st.one_of(st.sampled_from([WORK, "faults.nope", ""]), json_like),
    "id": st.one_of(st.uuids().map(str), json_like),
    "eta": st.one_of(iso_times, soon, json_like),
    "expires": st.one_of(iso_times, soon, json_like),
    "retries": json_like,
    "timelimit": st.one_of(st.lists(st.one_of(st.none(), st.floats()), max_size=3), json_like),
    "taskq_deliveries": st.one_of(st.integers(min_value=-3, max_value=10), json_like),
    "group": json_like,
    "group_index": json_like,
    "root_id": json_like,
    "parent_id": json_like,
    "ignore_result": json_like,
    "stamps": json_like,
    "stamped_headers": json_like,
    "replaced_task_nesting": json_like,
    "compression": st.one_of(st.sampled_from(["application/x-gzip", "zlib", "bogus"]), json_like),
}


# Composite strategies, so that a falsifying example prints as plain values.
@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    extra = draw(st.dictionaries(st.text(max_size=12), json_like, max_size=3))
    known = draw(st.fixed_dictionaries({}, optional=header_values))
    if draw(st.booleans()):
        # Start from what a real client sends, so that the deeper checks are reached too.
        real = to_headers(TaskMessage(id=draw(st.uuids()).hex, task=WORK, args=(0.001,)))
        dropped = draw(st.sets(st.sampled_from(sorted(real)), max_size=2))
        kept = {k: v for k, v in real.items() if k not in dropped}
        return {**extra, **kept, **draw(st.fixed_dictionaries({}, optional=header_values))}
    return {**extra, **known}


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["binary", "triple", "task", "valid", "json", "big"]))
    if shape == "binary":
        return draw(st.binary(max_size=MAX_MESSAGE_SIZE + 512))
    if shape == "triple":  # [anything, anything, anything]
        return json.dumps([draw(json_like) for _ in range(3)]).encode()
    if shape == "task":  # [args, kwargs, embed] with the right outer types
        args = draw(st.lists(json_like, max_size=3))
        kwargs = draw(st.dictionaries(st.text(max_size=8), json_like, max_size=3))
        embed = draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["callbacks", "errbacks", "chain", "chord"]),
                    json_like,
                    max_size=2,
                ),
            )
        )
        return json.dumps([args, kwargs, embed]).encode()
    if shape == "valid":  # what work(seconds) takes
        seconds = draw(st.floats(min_value=0, max_value=0.01))
        return json.dumps([[seconds], {}, {"callbacks": None, "chain": None}]).encode()
    if shape == "json":
        return json.dumps(draw(json_like)).encode()
    return b"x" * (MAX_MESSAGE_SIZE + 1)


content_types = st.one_of(
    st.just("application/json"),
    st.none(),
    st.sampled_from(
        ["application/json", "application/x-python-serialize", "application/x-yaml", ""]
    ),
    st.text(max_size=20),
)
encodings = st.one_of(st.just("utf-8"), st.none(), st.sampled_from(["binary", "latin-1", "bogus"]))


# -- the consumer under test


class Observed:
    """A real Consumer, connected to memory://, with the raw messages it was handed."""

    def __init__(self, app: Taskq, queue: str):
        # A prefetch window no example can fill: a message leaked by one example must fail
        # that example, not block the delivery of all the next ones.
        options = WorkerOptions(pool="solo", queues=(queue,), prefetch_multiplier=10_000)
        worker = Worker(app, options)
        pool = POOLS[worker.pool_name](app, worker.pool_options)
        pool.start()
        self.queue = queue
        self.consumer = Consumer(app, pool, worker.consumer_options)
        self.seen: list[Any] = []
        self.settled = 0  # examples the handler acked or dead-lettered
        self.reserved = 0  # examples it took as runnable tasks
        handler = self.consumer._on_message

        def observe(raw: Any, *args: Any, **kwargs: Any) -> None:
            # Only notes what the consumer was handed; the real handler does all the work.
            self.seen.append(raw)
            handler(raw, *args, **kwargs)

        self.consumer._on_message = observe  # type: ignore[method-assign]
        self.consumer._connect(first=True)

    def deliver(self, body: bytes, headers: dict[str, Any], ct: str | None, enc: str | None) -> Any:
        channel = self.consumer.connection.default_channel
        message = channel.prepare_message(
            body, 0, content_type=ct, content_encoding=enc, headers=headers, properties={}
        )
        channel.basic_publish(message, exchange=self.queue, routing_key=self.queue)
        before = len(self.seen)
        self.consumer.connection.drain_events(timeout=5)  # raises if the handler raised
        assert len(self.seen) == before + 1, "the message was not delivered"
        return self.seen[-1]

    def holding(self) -> list[Any]:
        # Reserved, held for later, or waiting for the keeper to store its state first.
        waiting = [h for h in self.consumer.keeper.waiting.values() if h is not None]
        return [*self.consumer.ready, *self.consumer.held.values(), *waiting]

    def responsible_for(self, raw: Any) -> bool:
        return any(request.raw is raw for request in self.holding())

    def settle_all(self) -> None:
        """Ack what the consumer reserved, so the next example starts from nothing."""
        for request in self.holding():
            request.ack()
        self.consumer.keeper.abandon()
        self.consumer.ready.clear()
        self.consumer.held.clear()
        self.consumer.timers.clear()

    def close(self) -> None:
        self.consumer.close_connection()


@pytest.fixture(scope="module")
def observed(pytestconfig: pytest.Config) -> Iterator[Observed]:
    queue = f"decode-{uuid.uuid4().hex[:8]}"
    app = Taskq(
        "faults-decode",
        broker="memory://",
        backend="memory://",
        task_default_queue=queue,
        task_dead_letter_queue=f"dead-{queue}",
        task_max_message_size=MAX_MESSAGE_SIZE,
    )
    register(app)
    found = Observed(app, queue)
    try:
        yield found
    finally:
        Results(pytestconfig, "Hypothesis", "memory").add(
            tasks=len(found.seen),
            extra={"settled": found.settled, "reserved": found.reserved},
        )
        found.close()
        with Connection("memory://") as conn:  # leave the in-process broker empty
            for name in (queue, f"dead-{queue}"):
                conn.default_channel.queue_delete(name)
        app.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    report_multiple_bugs=False,  # one clear counterexample, shrunk once: CI time counts
    suppress_health_check=[HealthCheck.too_slow],
)
@given(body=bodies(), headers=headers(), content_type=content_types, encoding=encodings)
def test_no_input_escapes_the_message_handler(
    observed: Observed,
    body: bytes,
    headers: dict[str, Any],
    content_type: str | None,
    encoding: str | None,
) -> None:
    """Hypothesis: arbitrary headers, body and content type never escape the handler."""
    raw = observed.deliver(body, headers, content_type, encoding)
    try:
        # Acked, not merely "acknowledged": kombu counts a requeue as that too, and a
        # message put back would come round again forever.
        settled, reserved = raw._state == "ACK", observed.responsible_for(raw)
        observed.settled += settled
        observed.reserved += reserved
        assert settled or reserved, f"left {raw._state} with no request holding it"
    finally:
        observed.settle_all()
