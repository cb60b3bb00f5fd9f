"""The "ceiling" row: what bare Python and redis-py do on this machine, with no framework.

``python -m benchmarks.ceiling --redis URL --n N`` fills a list with N copies of a real
Celery-protocol message (made by taskq's client, which speaks Celery's wire format) and
times two loops that drain it, each doing what a worker must minimally do per message:
pop it, decode the envelope and the body, call ``add``, count it.

* ``bare``: 2 processes, each ``RPOP key 100`` per round trip, decode, ``add``, and one
  ``INCRBY`` per batch.
* ``prefork``: the shape of a prefork worker: one parent pops and decodes, sends batches of
  50 argument tuples to 2 children over pipes, the children call ``add`` and send the
  results back, and the parent counts them with one ``INCRBY`` per returned batch.

Prints one JSON object: tasks/s of each loop.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import redis

KEY = "ceiling:queue"
COUNTER = "ceiling:count"
FETCH = 100  # messages per RPOP
BATCH = 50  # messages per pipe write in the prefork shape
PROCESSES = 2
PUSH_CHUNK = 1000


def add(x: Any, y: Any) -> Any:
    return x + y


def decode(raw: Any) -> tuple[list[Any], dict[str, Any]]:  # redis-py types RPOP loosely
    """kombu's Redis envelope -> the task's (args, kwargs): JSON, base64, JSON again."""
    envelope = json.loads(raw)
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return args, kwargs


def sample_message(url: str) -> bytes:
    """One real message: ``bench.add(1, 2)`` sent by taskq's client, read back raw."""
    from taskq import Taskq

    app = Taskq("ceiling", broker=url, task_default_queue="ceiling-sample")
    try:
        app.send_task("bench.add", [1, 2], {})
        raw = redis.Redis.from_url(url).rpop("ceiling-sample")
    finally:
        app.close()
    if not isinstance(raw, bytes):
        raise RuntimeError("the sample message did not arrive in Redis")
    return raw


def fill(client: redis.Redis, message: bytes, n: int) -> None:
    client.delete(KEY, COUNTER)
    pipe = client.pipeline(transaction=False)
    for start in range(0, n, PUSH_CHUNK):
        pipe.lpush(KEY, *[message] * min(PUSH_CHUNK, n - start))
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()


def bare_loop(url: str, go: Any) -> None:
    client = redis.Redis.from_url(url)
    client.ping()  # connect before the clock starts
    go.wait()
    while batch := client.rpop(KEY, FETCH):
        for raw in batch:
            args, kwargs = decode(raw)
            add(*args, **kwargs)
        client.incrby(COUNTER, len(batch))


def pool_child(conn: Connection) -> None:
    while (batch := conn.recv()) is not None:
        conn.send([add(*args, **kwargs) for args, kwargs in batch])


def prefork_loop(client: redis.Redis, conns: list[Connection]) -> None:
    outstanding = dict.fromkeys(conns, 0)

    def collect(block: bool) -> None:
        for ready in wait(conns, timeout=None if block else 0):
            assert isinstance(ready, Connection)
            client.incrby(COUNTER, len(ready.recv()))
            outstanding[ready] -= 1

    while raw := client.rpop(KEY, FETCH):
        decoded = [decode(m) for m in raw]
        for start in range(0, len(decoded), BATCH):
            # Up to two batches in flight per child: one running, one waiting in the pipe.
            while min(outstanding.values()) >= 2:
                collect(block=True)
            conn = min(outstanding, key=outstanding.__getitem__)
            conn.send(decoded[start : start + BATCH])
            outstanding[conn] += 1
        collect(block=False)
    while any(outstanding.values()):
        collect(block=True)


def run_bare(url: str) -> float:
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=bare_loop, args=(url, go)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    time.sleep(0.2)  # let both connect; their start-up is not part of the loop
    began = time.perf_counter()
    go.set()
    for p in procs:
        p.join(timeout=300)
    return time.perf_counter() - began


def run_prefork(url: str) -> float:
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(PROCESSES)]
    procs = [ctx.Process(target=pool_child, args=(child,)) for _, child in pipes]
    for p in procs:
        p.start()
    client = redis.Redis.from_url(url)
    client.ping()
    parents = [parent for parent, _ in pipes]
    try:
        began = time.perf_counter()
        prefork_loop(client, parents)
        return time.perf_counter() - began
    finally:
        for conn in parents:
            conn.send(None)
        for p in procs:
            p.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    parser.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT/DB to use")
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis)
    message = sample_message(args.redis)
    out: dict[str, Any] = {"n": args.n, "message_bytes": len(message)}
    for name, run in (("bare", run_bare), ("prefork", run_prefork)):
        fill(client, message, args.n)
        seconds = run(args.redis)  # drains the list until empty
        done = int(client.get(COUNTER) or 0)
        if done != args.n:
            raise SystemExit(f"ceiling {name}: counted {done} of {args.n} messages")
        out[name] = args.n / seconds
    client.delete(KEY, COUNTER)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
