"""The same tasks on a Celery 5.7 app that signs, for test_security_workers.py (SEC_*)."""

from __future__ import annotations

import os

import celery

app = celery.Celery(
    "sec", broker=os.environ.get("SEC_BROKER"), backend=os.environ.get("SEC_BACKEND")
)
app.conf.update(
    task_serializer="auth",
    accept_content=["auth"],
    # taskq stores results as JSON; under accept_content ["auth"] alone Celery's clients
    # refuse JSON results (docs/security.md).
    result_accept_content=["json"],
    security_key=os.environ.get("SEC_KEY"),
    security_certificate=os.environ.get("SEC_CERT"),
    security_cert_store=os.environ.get("SEC_STORE"),
)
if os.environ.get("SEC_KEY"):
    app.setup_security()


@app.task(name="sec.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="sec.whoami")
def whoami() -> str:
    return "celery"
