"""What ``broker_transport_options={"min_replicas": 1}`` costs a publish: measure it.

A private Redis master and one replica on loopback (tests/servers.py). A client app sends
``N`` tasks one at a time with ``apply_async``, first as usual, then with ``min_replicas=1``
(each publish waits for Redis ``WAIT 1 <timeout>``: the replica has acknowledged the
message). Printed: publishes per second and the median and 99th-percentile time of one
publish, for each. No worker runs: only the publish is measured. Nothing here asserts.

Run: ``python -m benchmarks.replicated_publish [N]`` (default 5,000, three rounds each,
the best round kept).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

from taskq import Taskq
from tests.integration.helpers import wait_for
from tests.servers import replica_pair

ROUNDS = 3


def measure(url: str, count: int, options: dict[str, object]) -> tuple[float, float, float]:
    """(publishes/s, median ms, p99 ms) of the best of ``ROUNDS`` rounds."""
    app = Taskq("bench", broker=url, backend=None)
    app.conf.update(broker_transport_options=options, task_ignore_result=True)
    send = app.send_task
    best: tuple[float, float, float] | None = None
    try:
        send("bench.noop")  # connect first
        for _ in range(ROUNDS):
            times = []
            began = time.perf_counter()
            for _ in range(count):
                start = time.perf_counter()
                send("bench.noop", (1, 2))
                times.append(time.perf_counter() - start)
            rate = count / (time.perf_counter() - began)
            times.sort()
            row = (rate, statistics.median(times) * 1e3, times[int(len(times) * 0.99)] * 1e3)
            if best is None or row[0] > best[0]:
                best = row
    finally:
        app.close()
    assert best is not None
    return best


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    import redis

    with contextlib.ExitStack() as stack:
        master, _ = replica_pair(stack)
        client = redis.Redis("127.0.0.1", master.port)
        wait_for(lambda: client.info("replication")["connected_slaves"] == 1, 30, "replica")
        print(f"{count} publishes, one at a time, master + 1 replica on loopback")
        print("| min_replicas | publishes/s | median ms | p99 ms | WAITs seen by Redis |")
        print("|---|---|---|---|---|")
        for replicas in (0, 1, 0, 1):  # twice each, in turn: a warm-up shows
            options = {"min_replicas": replicas} if replicas else {}
            rate, median, p99 = measure(master.url, count, options)
            waits = client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
            print(f"| {replicas} | {rate:,.0f} | {median:.3f} | {p99:.3f} | {waits} |")


if __name__ == "__main__":
    main()
