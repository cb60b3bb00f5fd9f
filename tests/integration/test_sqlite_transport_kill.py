"""The embedded SQLite transport across real processes: SIGKILL and concurrent consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
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


# Tries to take a message for a few seconds; prints what it got.
TRY_ONE = """
import sys
from queue import Empty
from kombu import Connection
from taskq.transports.sqlite import Transport
conn = Connection(sys.argv[1], transport=Transport)
try:
    message = conn.SimpleQueue("jobs").get(timeout=3)
    print("took", message.payload)
except Empty:
    print("nothing")
"""


def test_a_process_whose_wall_clock_jumped_takes_no_live_lease(
    url: str, tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    # Leases are measured on the machine's boot-time clock: a wall clock one hour ahead
    # (a jump, a bad NTP step) must not make a live holder's lease look expired.
    with Connection(url, transport=Transport) as conn:
        conn.SimpleQueue("jobs").put("held")
    marker = tmp_path / "taken"
    spawn(HOLD_ONE, url, str(marker))
    wait_for(marker.exists, 30, "the holder to take the message")
    clock = REPO / "tests" / "faults" / "clock"
    env = {**os.environ, "PYTHONPATH": f"{clock}:{REPO}", "FAULT_CLOCK_SKEW": "3600"}
    jumped = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRY_ONE), url],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert jumped.stdout.strip() == "nothing", jumped.stdout + jumped.stderr
    # and the same process with a true clock sees the same: the lease is live
    honest = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRY_ONE), url],
        env={**env, "FAULT_CLOCK_SKEW": "0"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert honest.stdout.strip() == "nothing", honest.stdout + honest.stderr


def test_leases_from_another_clock_get_one_term_then_expire(url: str) -> None:
    # A file written by an earlier boot (or an older taskq, on the wall clock): its leases
    # are restarted for one term on the new clock, not honoured for decades or dropped.
    import sqlite3

    with Connection(url, transport=Transport) as conn:
        conn.SimpleQueue("jobs").put("from another boot")
    path = url[len("sqlite:///") :]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE messages SET lease_until = 1e12, owner_ns = 'gone', owner_pid = 1")
    db.execute("UPDATE clock SET value = 'boot:a-previous-one' WHERE name = 'leases'")
    db.close()
    options = {"visibility_timeout": 2.0, "lease_renew_interval": 1.0}
    with Connection(url, transport=Transport, transport_options=options) as conn:
        queue = conn.SimpleQueue("jobs")
        # Not at once (its owner might be alive and renewing, after an upgrade) ...
        with pytest.raises(Empty):
            queue.get(timeout=0.5)
        # ... but after one term on the new clock, not in 30,000 years.
        message = queue.get(timeout=30)
        assert message.payload == "from another boot"
        message.ack()
