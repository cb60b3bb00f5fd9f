"""Canvas on the embedded default: `python examples/canvas/workflow.py`.

Starts a real worker process (no server to install), then runs a chain, a group, a chord
and a chord inside a chain, printing each result; the worker stops warm at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="taskq-canvas-") as data:
        os.environ["CANVAS_DIR"] = data
        sys.path.insert(0, str(ROOT))
        from examples.canvas.tasks import double, fetch, merge, report, total
        from taskq import chain, chord, group

        worker = subprocess.Popen(
            [sys.executable, "-m", "taskq", "-A", "examples.canvas.tasks", "worker", "-c", "2"],
            cwd=ROOT, env=os.environ.copy(),
        )  # fmt: skip
        try:
            # fetch(3) -> total -> double -> report: each step gets the previous result.
            flow = chain(fetch.s(3), total.s(), double.s(), report.s("chain"))
            print(flow.delay().get(timeout=60))
            # ten pages at once; the group's result is the list of their results
            pages = group(chain(fetch.s(p), total.s()) for p in range(10))
            print("group:", pages.delay().get(timeout=60))
            # a chord: the body runs once, with every member's result, when all are done
            print("chord:", chord(pages, merge.s()).delay().get(timeout=60))
            # and a chord as one step of a chain
            nested = chain(chord(pages, merge.s()), double.s(), report.s("chord in a chain"))
            print(nested.delay().get(timeout=60))
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        print(f"worker stopped, exit code {code}")
        return code


if __name__ == "__main__":
    sys.exit(main())
