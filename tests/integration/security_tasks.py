"""Tasks for test_security_workers.py: a taskq app that signs, configured from SEC_* variables.

The same module serves the worker (``-A tests.integration.security_tasks``) and the test's
client, so both sign with the key and trust the store the test made.
"""

from __future__ import annotations

import os

from taskq import Taskq


def make_app(broker: str, backend: str, key: str, cert: str, store: str) -> Taskq:
    app = Taskq("sec", broker=broker, backend=backend, set_as_current=False)
    app.setup_security(key=key, cert=cert, store=store)

    @app.task(name="sec.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="sec.whoami")
    def whoami() -> str:
        return "taskq"

    return app


def from_env() -> Taskq | None:
    names = ("SEC_BROKER", "SEC_BACKEND", "SEC_KEY", "SEC_CERT", "SEC_STORE")
    if not all(os.environ.get(n) for n in names):
        return None
    return make_app(*(os.environ[n] for n in names))


app = from_env()
