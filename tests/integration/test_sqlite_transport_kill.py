"""The embedded SQLite transport across real processes: SIGKILL and concurrent consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from taskq.transports.sqlite import Transport
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Takes one message, reports it, never acks, and waits to be killed.
HOLD_ONE = """
import sys, os, time
from kombu import Connection
from taskq.transports.sqlite import Transport
url, marker = sys.argv[1:3]
conn = Connection(url, transport=Transport)
message = conn.SimpleQueue("jobs").get(timeout=60)
with open(marker + ".tmp", "w") as f:
    f.write(str(message.payload))
os.rename(marker + ".tmp", marker)  # the test sees the whole id or nothing
time.sleep(600)
"""

# Acks every message and records its id after the ack; a "stop" message ends it.
CONSUME_ALL = """
import sys
from kombu import Connection
from taskq.transports.sqlite import Transport
url, out = sys.argv[1:3]
conn = Connection(url, transport=Transport)
queue = conn.SimpleQueue("jobs")
with open(out, "w") as f:
    while True:
        message = queue.get(timeout=60)
        message.ack()
        if message.payload == "stop":
            break
        f.write(f"{message.payload}\\n")
        f.flush()
conn.release()
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.sqlite3"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }

    def _spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env)
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def publish(url: str, bodies: list[Any]) -> None:
    with Connection(url, transport=Transport) as conn:
        queue = conn.SimpleQueue("jobs")
        for body in bodies:
            queue.put(body)


def test_sigkilled_consumer_message_comes_back_at_once(
    url: str, tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    publish(url, list(range(5)))
    marker = tmp_path / "held"
    holder = spawn(HOLD_ONE, url, str(marker))
    wait_for(marker.exists, 60, "the holder to take a message")
    held = int(marker.read_text())

    with Connection(url, transport=Transport) as conn:
        queue = conn.SimpleQueue("jobs")
        # While the holder lives its lease stands: the other four only.
        before = [queue.get(timeout=5) for _ in range(4)]
        assert sorted(m.payload for m in before) == sorted(set(range(5)) - {held})
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)

        os.kill(holder.pid, signal.SIGKILL)  # not reaped yet: a zombie is dead too
        # The default visibility_timeout is 60 s; the message must come back well before.
        back = queue.get(timeout=20)
        assert back.payload == held
        assert back.delivery_info.get("redelivered") is True
        for message in [*before, back]:
            message.ack()
        assert queue.qsize() == 0
    holder.wait(10)


def test_two_consumer_processes_ack_every_message_once(
    url: str, tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    count = 200
    publish(url, [*range(count), "stop", "stop"])
    outs = [tmp_path / f"acked-{i}.txt" for i in range(2)]
    consumers = [spawn(CONSUME_ALL, url, str(out)) for out in outs]
    for proc in consumers:
        assert proc.wait(120) == 0

    acked = [int(line) for out in outs for line in out.read_text().split()]
    assert len(acked) == len(set(acked)), "a message was delivered to both consumers"
    assert sorted(acked) == list(range(count)), "a message was lost"
    with Connection(url, transport=Transport) as conn:
        assert conn.SimpleQueue("jobs").qsize() == 0
