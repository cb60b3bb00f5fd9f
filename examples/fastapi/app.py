"""A FastAPI service that hands work to taskq and awaits the result without blocking.

    taskq -A app worker -l INFO          # the worker (embedded default: no server needed)
    uvicorn app:api                      # the service
    curl -X POST 'localhost:8000/add?x=2&y=3'

``await add.delay(x, y)`` waits in a thread, a second at a time: the event loop serves
other requests meanwhile, and a client that goes away stops the wait.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI, HTTPException

from taskq import Taskq
from taskq.exceptions import TimeoutError as TaskTimeout

app = Taskq(
    "service",
    broker=os.environ.get("SERVICE_BROKER") or None,
    backend=os.environ.get("SERVICE_BACKEND") or None,
)
api = FastAPI()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
async def slow_square(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)  # an async task: the worker runs it on its own loop
    return x * x


@api.post("/add")
async def add_endpoint(x: int, y: int) -> dict[str, int]:
    return {"sum": await add.delay(x, y)}


@api.post("/square")
async def square_endpoint(x: int, seconds: float = 0.0) -> dict[str, int]:
    try:
        return {"square": await slow_square.delay(x, seconds).aget(timeout=10)}
    except TaskTimeout:
        raise HTTPException(status_code=504, detail="the task took too long") from None
