"""The app of ``python -m benchmarks.scaling``: one task that does nothing.

The broker comes from ``SCALE_BROKER_URL`` (set by the harness for the workers and used by
its own publisher), and there is no result backend, so the broker is the only server a
worker talks to and everything the broker spends is the workers' and the publisher's.
``SCALE_TRANSPORT_OPTIONS`` (JSON, e.g. ``{"peek_timeout": 5}``) adds broker transport
options, so one run can measure a variant of the idle wait.
"""

from __future__ import annotations

import json
import os

from taskq import Taskq

app = Taskq("scale", broker=os.environ.get("SCALE_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, result_backend=None)
app.conf.broker_transport_options = json.loads(os.environ.get("SCALE_TRANSPORT_OPTIONS") or "{}")


@app.task(name="scale.noop")
def noop() -> None:
    """The trivial task of the busy windows."""
