"""`make demo`: start a real worker on the embedded default, send tasks, print results,
then stop the worker with SIGTERM (a warm shutdown) and check it exited cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="taskq-demo-") as data:
        os.environ["TASKQ_DEMO_DIR"] = data
        sys.path.insert(0, str(ROOT))
        from examples.quickstart.tasks import add, app, divide, flaky_fetch, mul

        print(f"Embedded broker and results in {data}")
        log_path = Path(data) / "worker.log"
        log = log_path.open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskq", "-A", "examples.quickstart.tasks", "worker",
             "-l", "info", "-c", "2"],
            cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            start = time.monotonic()
            print("add(2, 2)            =", add.delay(2, 2).get(timeout=30))
            print("mul(6, 7)            =", mul.apply_async((6, 7)).get(timeout=30))
            callback = mul.s(10).set(task_id=str(uuid.uuid4()))
            first = add.apply_async((1, 2), link=callback)
            then = app.AsyncResult(callback.options["task_id"])
            print("add(1, 2), link mul  =", first.get(timeout=30), "then", then.get(timeout=30))
            print("countdown=0.5        =", add.apply_async((5, 5), countdown=0.5).get(timeout=30))
            results = [add.delay(i, i) for i in range(100)]
            print("100 x add, summed    =", sum(r.get(timeout=30) for r in results))
            print(
                "flaky_fetch          =", flaky_fetch.delay("https://example.org").get(timeout=30)
            )
            try:
                divide.delay(1, 0).get(timeout=30)
            except ZeroDivisionError as exc:
                print("divide(1, 0) raised  = ZeroDivisionError:", exc)
            print(f"all done in {time.monotonic() - start:.2f} s")
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            log.close()
        lines = log_path.read_text().splitlines()
        print(f"worker stopped (warm shutdown), exit code {code}; its log ({len(lines)} lines):")
        for line in lines[-4:]:
            print("  |", line)
        if code != 0:
            print("\n".join(lines))
        return code


if __name__ == "__main__":
    sys.exit(main())
