"""Does an embedded kombu broker keep a SIGKILLed worker's unacked message? Measure it.

For kombu's ``filesystem://`` and ``sqla+sqlite://`` transports and taskq's own ``sqlite://``
transport this script runs two experiments, each with real processes:

1. kill: publish N=20 messages; a consumer process takes one without acking and is SIGKILLed;
   a fresh consumer then takes and acks whatever it can get within 15 s. lost = N - recovered.
2. two consumers: publish 200 messages; two consumer processes ack them concurrently and
   record each acked id. Duplicates and losses (not acked within 30 s of no progress) are
   counted from those records.

``filesystem://`` runs twice: with its data folder on the same filesystem as ``$TMPDIR`` (where
kombu moves a file it takes) and, if /dev/shm is another filesystem, on /dev/shm.

Run: ``python benchmarks/embedded_durability.py``. ``sqla+sqlite://`` needs SQLAlchemy; its row
is skipped with a note when SQLAlchemy is not importable. Nothing here asserts: it prints a table.
``python benchmarks/embedded_durability.py experiment {kill|multi} KIND`` runs one experiment
(KIND: one of ``KINDS`` below) and prints its raw result as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kombu import Connection

REPO = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is benchmarks/. Every process this file runs as (the table,
# an experiment, a child) puts the repo root first, once, so taskq and the test helpers
# import from this checkout whichever interpreter runs it.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.helpers import wait_for  # noqa: E402  (plain Python, no pytest)

KILL_N = 20
RECOVERY_WINDOW = 15.0
MULTI_N = 200
NO_PROGRESS_LIMIT = 30.0
QUEUE = "jobs"
OTHER_FS = "/dev/shm"

KINDS = {
    "filesystem": "filesystem://",
    "filesystem-xdev": f"filesystem:// (data on {OTHER_FS}, not on $TMPDIR's filesystem)",
    "sqla+sqlite": "sqla+sqlite://",
    "taskq": "taskq sqlite://",
}


def connect(kind: str, workdir: str) -> Connection:
    """A fresh connection to the broker of ``kind`` whose files live in ``workdir``."""
    if kind.startswith("filesystem"):
        # One folder for in and out, so what one process publishes another can read.
        data, control = os.path.join(workdir, "data"), os.path.join(workdir, "control")
        for folder in (data, control):
            os.makedirs(folder, exist_ok=True)
        options = {"data_folder_in": data, "data_folder_out": data, "control_folder": control}
        return Connection("filesystem://", transport_options=options)
    if kind == "sqla+sqlite":
        return Connection(f"sqla+sqlite:///{workdir}/kombu.sqlite3")
    if kind == "taskq":
        from taskq.transports.sqlite import Transport  # here: the kombu rows do without taskq

        return Connection(f"sqlite:///{workdir}/broker.sqlite3", transport=Transport)
    raise ValueError(kind)


# -- child processes -----------------------------------------------------------------------
def child_hold(kind: str, workdir: str, marker: str) -> None:
    """Take one message, never ack it, say which one, and wait to be killed."""
    conn = connect(kind, workdir)
    message = conn.SimpleQueue(QUEUE).get(timeout=60)
    Path(marker + ".tmp").write_text(json.dumps(message.payload))
    os.rename(marker + ".tmp", marker)
    time.sleep(600)


def child_consume(kind: str, workdir: str, out: str) -> None:
    """Ack messages, recording each id after its ack, until the parent says done."""
    done = Path(workdir, "done")
    conn = connect(kind, workdir)
    queue = conn.SimpleQueue(QUEUE)
    with open(out, "w") as records:
        while not done.exists():
            try:
                message = queue.get(timeout=0.2)
            except queue.Empty:
                continue
            message.ack()
            records.write(f"{message.payload}\n")
            records.flush()
    conn.release()


# -- experiments (each runs in a fresh process, see run()) -------------------------------
def spawn(role: str, kind: str, workdir: str, path: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, __file__, "child", role, kind, workdir, path]
    return subprocess.Popen(argv, stderr=subprocess.PIPE)


def publish(kind: str, workdir: str, bodies: list[Any]) -> None:
    with connect(kind, workdir) as conn:
        queue = conn.SimpleQueue(QUEUE)
        for body in bodies:
            queue.put(body)


def wait_for_held(marker: Path, holder: subprocess.Popen[bytes]) -> None:
    """Until the holder says which message it took; its stderr if it died instead."""
    wait_for(lambda: marker.exists() or holder.poll() is not None, 60, "the holder's message")
    if not marker.exists():
        err = holder.stderr.read().decode()[-500:] if holder.stderr else ""
        raise RuntimeError(f"holder did not take a message: {err}")


def kill_experiment(kind: str, workdir: str) -> dict[str, Any]:
    publish(kind, workdir, list(range(KILL_N)))
    marker = Path(workdir, "held.json")
    holder = spawn("hold", kind, workdir, str(marker))
    try:
        wait_for_held(marker, holder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    held = json.loads(marker.read_text())
    killed_at = time.monotonic()
    recovered: set[Any] = set()
    held_back_after: float | None = None
    with connect(kind, workdir) as conn:
        queue = conn.SimpleQueue(QUEUE)
        while len(recovered) < KILL_N and time.monotonic() - killed_at < RECOVERY_WINDOW:
            try:
                message = queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if message.payload == held and held_back_after is None:
                held_back_after = time.monotonic() - killed_at
            recovered.add(message.payload)
            message.ack()
    return {"recovered": len(recovered), "held_back_after": held_back_after}


def read_records(outs: list[Path]) -> list[int]:
    return [int(line) for out in outs if out.exists() for line in out.read_text().split()]


def multi_experiment(kind: str, workdir: str) -> dict[str, Any]:
    publish(kind, workdir, list(range(MULTI_N)))
    outs = [Path(workdir, f"acked-{i}.txt") for i in range(2)]
    procs = [spawn("consume", kind, workdir, str(out)) for out in outs]
    seen, last_progress = 0, time.monotonic()
    while time.monotonic() - last_progress < NO_PROGRESS_LIMIT:
        unique = len(set(read_records(outs)))
        if unique >= MULTI_N or all(proc.poll() is not None for proc in procs):
            break
        if unique > seen:
            seen, last_progress = unique, time.monotonic()
        time.sleep(0.1)
    Path(workdir, "done").touch()
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode:
            errors.append(err.decode().strip().splitlines()[-1] if err else "no output")
    acked = read_records(outs)
    return {"acked": acked, "errors": errors}


EXPERIMENTS = {"kill": kill_experiment, "multi": multi_experiment}


def run(experiment: str, kind: str) -> dict[str, Any]:
    """Run one experiment in a fresh process and directory.

    A fresh process because kombu keeps some broker state per process (``filesystem://``
    caches declared bindings in a class attribute, so a second data folder in the same
    process would never get its binding written), which must not leak between runs.
    """
    argv = [sys.executable, __file__, "experiment", experiment, kind]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode:
        raise RuntimeError(f"{experiment} on {kind} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def row(kind: str) -> str:
    kill, multi = run("kill", kind), run("multi", kind)
    back = kill["held_back_after"]
    back_text = f"{back:.2f} s" if back is not None else f"never (> {RECOVERY_WINDOW:.0f} s)"
    acked = multi["acked"]
    duplicates = len(acked) - len(set(acked))
    lost = MULTI_N - len(set(acked) & set(range(MULTI_N)))
    errors = "; ".join(multi["errors"]) or "none"
    return (
        f"| {KINDS[kind]} | {kill['recovered']} | {KILL_N - kill['recovered']} | {back_text} |"
        f" {len(acked)} | {duplicates} | {lost} | {errors} |"
    )


def main() -> None:
    kinds = list(KINDS)
    tmp_dev = os.stat(tempfile.gettempdir()).st_dev
    if not os.path.isdir(OTHER_FS) or os.stat(OTHER_FS).st_dev == tmp_dev:
        kinds.remove("filesystem-xdev")  # no second filesystem to show the cross-device case
    if importlib.util.find_spec("sqlalchemy") is None:
        print("SQLAlchemy is not importable: skipping sqla+sqlite:// (pip install SQLAlchemy)\n")
        kinds.remove("sqla+sqlite")
    print(
        f"| transport | SIGKILL: recovered of {KILL_N} | lost | killed message back after |"
        f" 2 consumers: acks of {MULTI_N} | duplicates | lost | consumer errors |"
    )
    print("|" + "---|" * 8)
    for kind in kinds:
        print(row(kind), flush=True)


def experiment_main(experiment: str, kind: str) -> None:
    base = OTHER_FS if kind == "filesystem-xdev" else None
    with tempfile.TemporaryDirectory(prefix="durability-", dir=base) as workdir:
        print(json.dumps(EXPERIMENTS[experiment](kind, workdir)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        role, kind, workdir, path = sys.argv[2:6]
        {"hold": child_hold, "consume": child_consume}[role](kind, workdir, path)
    elif sys.argv[1:2] == ["experiment"]:
        experiment_main(*sys.argv[2:4])
    else:
        main()
