import asyncio
import threading

import httpx
import pytest
from app import add, api, slow_square

from taskq.contrib.testing import start_worker


@pytest.fixture
def worker():
    # The service's app, on the memory transport, with a worker thread.
    add.app.conf.update(broker_url="memory://", result_backend="memory://")
    add.app.close()
    with start_worker(add.app, pool="threads", concurrency=4) as w:
        yield w


def test_add(worker):
    async def call():
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.post("/add", params={"x": 2, "y": 3})).json()

    assert asyncio.run(call()) == {"sum": 5}


def test_the_loop_serves_others_while_a_task_runs(worker):
    # Two slow tasks awaited at once take about one task's time, not two: the awaits
    # do not hold the loop. Checked by event, not by the clock: both are in flight
    # together before either finishes.
    in_flight = threading.Barrier(2, timeout=20)
    original = slow_square.fun

    async def gated(x, seconds):
        in_flight.wait()
        return await original(x, seconds)

    slow_square.fun = gated
    try:

        async def call():
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                first, second = await asyncio.gather(
                    client.post("/square", params={"x": 3}),
                    client.post("/square", params={"x": 4}),
                )
                return first.json(), second.json()

        assert asyncio.run(call()) == ({"square": 9}, {"square": 16})
    finally:
        slow_square.fun = original
