"""What taskq counts for Prometheus, shared by a worker's ``--metrics-port`` (worker/metrics.py)
and the dashboard's fleet ``/metrics`` (dashboard/metrics.py), so that their series have the
same names and buckets and add up. Names only: prometheus_client is imported by those two.
"""

from __future__ import annotations

from . import states

# Seconds: from a few milliseconds to five minutes, where most tasks' runtimes fall.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# A task's end state -> its counter, taskq_tasks_<counter>_total.
OUTCOMES = {
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
    states.RETRY: "retried",
    states.REVOKED: "revoked",
    states.REJECTED: "rejected",
}
# Every task counter, in the order a task meets them.
KINDS = ("received", "started", *OUTCOMES.values())

__all__ = ["KINDS", "OUTCOMES", "RUNTIME_BUCKETS"]
