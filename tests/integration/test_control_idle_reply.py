"""A worker answers remote control after RabbitMQ closed its idle reply connection.

kombu's remote control sends a worker's replies through the app's producer pool: a
connection of its own that is written to only when a command comes and never read, so it
answers no AMQP heartbeat, and RabbitMQ closes it once it has missed two. The next reply
must still get through (docs/scaling.md, "RabbitMQ: remote control's reply connection").
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq import Taskq
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.worker_tasks import itest_env, make_app
from tests.servers import RabbitServer

pytestmark = pytest.mark.integration
NODE = "idle-reply@itest"
HEARTBEAT = 2  # seconds: RabbitMQ closes a silent connection after about twice this


def connections_to(pid: int, port: int) -> set[int]:
    """The local ports of ``pid``'s established TCP connections to 127.0.0.1:``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        found = re.fullmatch(r"socket:\[(\d+)\]", target)
        if found:
            inodes.add(found.group(1))
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode in inodes and state == "01" and int(remote.split(":")[1], 16) == port:
            ports.add(int(local.split(":")[1], 16))
    return ports


@pytest.fixture
def worker(rabbit_server: RabbitServer, redis_backend_url: str) -> Iterator[WorkerProcess]:
    env = itest_env(rabbit_server.url, redis_backend_url, broker_heartbeat=HEARTBEAT)
    process = WorkerProcess(
        "tests.integration.worker_tasks", "-P", "solo", "-n", NODE, env=env
    ).start()
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log()


def test_a_reply_after_rabbitmq_closed_the_idle_reply_connection_gets_through(
    rabbit_server: RabbitServer, redis_backend_url: str, worker: WorkerProcess
) -> None:
    app: Taskq = make_app(rabbit_server.url, redis_backend_url, None)
    try:
        before = connections_to(worker.pid, rabbit_server.port)
        assert app.control.ping([NODE], timeout=10) == [{NODE: {"ok": "pong"}}]
        opened = connections_to(worker.pid, rabbit_server.port) - before
        assert len(opened) == 1, (before, opened)  # the reply connection
        (reply_port,) = opened

        def closed_by_rabbitmq() -> bool:
            # "closing AMQP connection <pid> (127.0.0.1:<port> -> ...):", then the reason
            # on a line of its own, under the same Erlang pid.
            lines = rabbit_server.log_tail(100_000).splitlines()
            for line, reason in itertools.pairwise(lines):
                if "closing AMQP connection" in line and f"127.0.0.1:{reply_port} ->" in line:
                    return "missed heartbeats" in reason
            return False

        wait_for(closed_by_rabbitmq, 60, "RabbitMQ to close the idle reply connection")
        # The worker's own connection answers its heartbeats: RabbitMQ closed only that one.
        assert before <= connections_to(worker.pid, rabbit_server.port), worker.log()
        assert app.control.ping([NODE], timeout=10) == [{NODE: {"ok": "pong"}}]
        assert app.tasks["itest.add"].delay(2, 3).get(timeout=30) == 5
    finally:
        app.close()
