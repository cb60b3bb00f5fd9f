"""The canvas on real prefork workers: Redis, RabbitMQ and the embedded default.

Every construct a Celery user writes (chain, group, chord, chunks, map, starmap,
replace), nested, with options and links on its parts, and the failure cases: a chain
step that fails fails the steps after it, a chord with a failed member fails its body
with a ChordError naming the member, errbacks with Celery's two conventions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import ChordError, GroupResult, Taskq, chain, chord, group, states
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.test_worker import BROKERS, Setup, make_setup

pytestmark = pytest.mark.integration
WAIT = 60


@pytest.fixture(scope="module", params=BROKERS)
def canvas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, Taskq, WorkerProcess]]:
    setup = make_setup(request.param, request, tmp_path_factory.mktemp(request.param))
    worker = setup.worker("-c", "2", "-Q", "taskq,math").start()
    client = setup.client()
    try:
        yield setup, client, worker
    finally:
        client.close()
        code = worker.stop()
        assert code == 0, worker.log()


def tasks(app: Taskq) -> Any:
    class T:
        add = app.tasks["itest.add"]
        mul = app.tasks["itest.mul"]
        tsum = app.tasks["itest.tsum"]
        fail = app.tasks["itest.fail"]
        collect = app.tasks["itest.collect"]
        replaced = app.tasks["itest.replaced"]
        square = app.tasks["itest.square"]

    return T


def test_chain_group_chord_chunks_map(canvas: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, _ = canvas
    t = tasks(app)
    assert (t.add.s(2, 2) | t.add.s(4) | t.mul.s(8)).delay().get(timeout=WAIT) == 64
    assert chain(t.add.s(1, 1), t.mul.s(3)).apply_async().get(timeout=WAIT) == 6
    assert group(t.add.s(i, i) for i in range(10)).delay().get(timeout=WAIT) == [
        2 * i for i in range(10)
    ]
    assert chord(t.add.s(i, i) for i in range(100))(t.tsum.s()).get(timeout=WAIT) == 9900
    assert chord([t.add.s(1, 2), t.add.s(3, 4)], t.tsum.s()).delay().get(timeout=WAIT) == 10
    pairs = list(zip(range(100), range(100), strict=True))
    parts = t.add.chunks(pairs, 10).delay().get(timeout=WAIT)
    assert [v for part in parts for v in part] == [2 * i for i in range(100)]
    assert t.square.map([1, 2, 3]).delay().get(timeout=WAIT) == [1, 4, 9]
    assert t.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=WAIT) == [3, 7]


def test_nesting_options_and_results(canvas: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, _ = canvas
    t = tasks(app)
    # A chain in a group; a group in a chain, followed by a task (becomes a chord); a chain
    # that ends in a group; a chord in a chain whose body is a chain; immutable steps.
    nested = group(t.add.s(1, 1) | t.mul.s(10), t.add.s(2, 2)).delay()
    assert nested.get(timeout=WAIT) == [20, 4]
    upgraded = chain(t.add.s(1, 1), group(t.mul.s(2), t.mul.s(3)), t.tsum.s()).delay()
    assert upgraded.get(timeout=WAIT) == 10
    assert chain(t.add.s(1, 1), group(t.mul.s(2), t.mul.s(3))).delay().get(timeout=WAIT) == [4, 6]
    inner = chord([t.mul.s(2), t.mul.s(3)], t.tsum.s() | t.add.s(5))
    assert chain(t.add.s(1, 1), inner, t.add.s(7)).delay().get(timeout=WAIT) == 22
    assert (t.add.s(1, 1) | t.add.si(5, 5) | t.mul.s(2)).delay().get(timeout=WAIT) == 20
    # Options on a part: a queue only this worker's "math" consumer reads, a countdown.
    routed = chain(t.add.s(1, 2), t.square.s().set(queue="math", countdown=0.2)).delay()
    assert routed.get(timeout=WAIT) == 9
    # Results: parents, children, extended fields; a saved group comes back by its id.
    assert routed.parent is not None and routed.parent.get(timeout=WAIT) == 3
    assert routed.parent.children is not None and routed.parent.children[0].id == routed.id
    saved = group(t.add.s(i, 1) for i in range(3)).delay()
    saved.save()
    restored = GroupResult.restore(saved.id, app=app)
    assert restored is not None and restored.get(timeout=WAIT) == [1, 2, 3]
    assert restored.completed_count() == 3 and restored.successful()


def test_links_on_any_part(canvas: tuple[Setup, Taskq, WorkerProcess], tmp_path: Path) -> None:
    _, app, _ = canvas
    t = tasks(app)
    done = t.collect.s().set(task_id=str(uuid.uuid4()))
    sig = chord([t.add.s(1, 1), t.add.s(2, 2)], t.tsum.s())
    sig.link(done)
    assert sig.delay().get(timeout=WAIT) == 6
    assert app.AsyncResult(done.id).get(timeout=WAIT) == 6


def test_replace(canvas: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, _ = canvas
    t = tasks(app)
    assert t.replaced.delay("task", 1).get(timeout=WAIT) == 101
    assert t.replaced.delay("chain", 1).get(timeout=WAIT) == 20
    assert t.replaced.delay("group", 1).get(timeout=WAIT) == [1, 2, 3]
    # In a chain, the replacement's value goes on to the next step.
    assert (t.replaced.s("chain", 2) | t.add.s(1)).delay().get(timeout=WAIT) == 31
    # In a chord's header, the replacement counts as the member it replaced.
    header = [t.replaced.s("task", 1), t.add.s(1, 1)]
    assert chord(header, t.tsum.s()).delay().get(timeout=WAIT) == 103


def test_failures(canvas: tuple[Setup, Taskq, WorkerProcess], tmp_path: Path) -> None:
    _, app, _ = canvas
    t = tasks(app)
    folder = str(tmp_path)
    # A failed step fails the steps after it: nobody waits for ever.
    res = (t.add.s(1, 1) | t.fail.si("step two") | t.add.s(1) | t.mul.s(2)).delay()
    with pytest.raises(ValueError, match="step two"):
        res.get(timeout=WAIT)  # may come from the failed step itself, the first to fail
    # The steps after it are failed with it, each with its own stored result.
    for step in (res, res.parent):
        with pytest.raises(ValueError, match="step two"):
            step.get(timeout=WAIT, follow_parents=False)
        assert step.state == states.FAILURE
    # A chord with a failed member: the body does not run; its result names the member.
    members = [t.add.s(1, 1), t.fail.si("member"), t.add.s(2, 2)]
    body = t.tsum.s()
    failed = chord(members, body).delay()
    with pytest.raises(ChordError, match=r"Dependency .* raised") as info:
        failed.get(timeout=WAIT)
    bad_member = failed.parent.results[1]
    assert bad_member.id in str(info.value)
    # Errbacks, Celery's two conventions: a function of more than one positional argument
    # is called in the worker with (request, exc, traceback); any other is sent as a task
    # with the failed task's id.
    errback = app.tasks["itest.errback_with_request"].s(folder)
    by_id = app.tasks["itest.errback_by_id"].s(folder=folder)
    broken = t.fail.apply_async(("with errbacks",), link_error=[errback, by_id])
    with pytest.raises(ValueError):
        broken.get(timeout=WAIT)
    wait_for(lambda: Path(folder, f"errback-id.{broken.id}").exists(), WAIT, "errback by id")
    assert "with errbacks" in Path(folder, f"errback.{broken.id}").read_text()


def test_a_large_chord(canvas: tuple[Setup, Taskq, WorkerProcess]) -> None:
    setup, app, _ = canvas
    t = tasks(app)
    n = 10_000 if setup.kind == "redis" else 2_000
    result = chord((t.add.s(i, 0) for i in range(n)), t.tsum.s()).delay()
    assert result.get(timeout=300) == n * (n - 1) // 2
