"""`async def` tasks for a real prefork worker (tests/integration/test_async_workers.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from taskq import Task, Taskq

app = Taskq(
    "aio",
    broker=os.environ.get("AIO_BROKER") or "memory://",
    backend=os.environ.get("AIO_BACKEND") or None,
    task_default_queue=os.environ.get("AIO_QUEUE", "aio"),
)


@app.task(name="aio.loop")
async def loop_info() -> list[int]:
    await asyncio.sleep(0.01)
    return [os.getpid(), id(asyncio.get_running_loop())]


@app.task(name="aio.gather")
async def gather(n: int) -> list[int]:
    async def one(i: int) -> int:
        await asyncio.sleep(0.05)
        return i * i

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@app.task(name="aio.slow", bind=True, soft_time_limit=1.0)
async def slow(self: Task[..., Any], folder: str) -> None:
    try:
        await asyncio.sleep(60)
    finally:
        # Cancelled by the soft time limit: its cleanup still runs.
        Path(folder, f"{self.request.id}.cleaned").write_text("yes")
