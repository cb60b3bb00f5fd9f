"""The pytest plugin: Celery's fixtures under taskq's names, registered by entry point.

Installed with taskq, so a test suite ported from ``celery.contrib.pytest`` only renames:

===============================  ====================================================
Celery                           taskq
===============================  ====================================================
``celery_app``                   ``taskq_app``: an app on ``memory://`` for one test
``celery_worker``                ``taskq_worker``: a worker thread for ``taskq_app``
``celery_session_app``           ``taskq_session_app``
``celery_session_worker``        ``taskq_session_worker``
``celery_config``                ``taskq_config``: override to give settings
``celery_parameters``            ``taskq_parameters``: ``Taskq(...)`` keywords
``celery_includes``              ``taskq_includes``: modules the worker imports
``celery_worker_pool``           ``taskq_worker_pool`` (``"solo"``)
``celery_worker_parameters``     ``taskq_worker_parameters``: ``start_worker`` keywords
``celery_enable_logging``        ``taskq_enable_logging``
``@pytest.mark.celery(...)``     ``@pytest.mark.taskq(...)``: settings for one test
``depends_on_current_app``       ``depends_on_current_app``
===============================  ====================================================

While a test uses ``taskq_app``, it is the default app, so ``@shared_task`` tasks (which
every app has) send through it; the previous default comes back after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from .. import shared
from ..app import Taskq
from .testing import start_worker

if TYPE_CHECKING:
    from ..worker.worker import Worker

TEST_DEFAULTS: Mapping[str, Any] = {"broker_url": "memory://", "result_backend": "memory://"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "taskq(**settings): settings of the taskq_app fixture for this test"
    )


@contextlib.contextmanager
def test_app(
    config: Mapping[str, Any], parameters: Mapping[str, Any], name: str = "taskq.tests"
) -> Iterator[Taskq]:
    """An app on the memory transport (unless ``config`` says otherwise), the default app
    while the block runs."""
    previous = shared.default_app()
    app = Taskq(name, **{**TEST_DEFAULTS, **parameters, **config})
    try:
        yield app
    finally:
        app.close()
        shared.restore_default(previous)


test_app.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def taskq_config() -> Mapping[str, Any]:
    """Settings of the test apps: override this fixture to give your own."""
    return {}


@pytest.fixture(scope="session")
def taskq_parameters() -> Mapping[str, Any]:
    """Keywords for ``Taskq(...)`` of the test apps (``task_cls=``, ...)."""
    return {}


@pytest.fixture(scope="session")
def taskq_includes() -> Sequence[str]:
    """Modules of tasks the test worker imports."""
    return ()


@pytest.fixture(scope="session")
def taskq_worker_pool() -> str:
    return "solo"


@pytest.fixture(scope="session")
def taskq_worker_parameters() -> Mapping[str, Any]:
    """Keywords for ``start_worker`` (``concurrency``, ``queues``, ``shutdown_timeout``...)."""
    return {}


@pytest.fixture(scope="session")
def taskq_enable_logging() -> bool:
    """Whether the test worker logs at INFO (off: a test's output stays its own)."""
    return False


@pytest.fixture
def taskq_app(
    request: pytest.FixtureRequest,
    taskq_config: Mapping[str, Any],
    taskq_parameters: Mapping[str, Any],
) -> Iterator[Taskq]:
    """An app for one test, with ``@pytest.mark.taskq(...)`` settings on top."""
    marker = request.node.get_closest_marker("taskq")
    config = {**taskq_config, **(marker.kwargs if marker else {})}
    with test_app(config, taskq_parameters) as app:
        yield app


@pytest.fixture
def taskq_worker(
    taskq_app: Taskq,
    taskq_includes: Sequence[str],
    taskq_worker_pool: str,
    taskq_worker_parameters: Mapping[str, Any],
    taskq_enable_logging: bool,
) -> Iterator[Worker]:
    """A worker for ``taskq_app`` in a thread, ready when the test starts."""
    with _worker(taskq_app, taskq_includes, taskq_worker_pool, taskq_worker_parameters,
                 taskq_enable_logging) as worker:  # fmt: skip
        yield worker


@pytest.fixture(scope="session")
def taskq_session_app(
    taskq_config: Mapping[str, Any], taskq_parameters: Mapping[str, Any]
) -> Iterator[Taskq]:
    with test_app(taskq_config, taskq_parameters, name="taskq.session") as app:
        yield app


@pytest.fixture(scope="session")
def taskq_session_worker(
    taskq_session_app: Taskq,
    taskq_includes: Sequence[str],
    taskq_worker_pool: str,
    taskq_worker_parameters: Mapping[str, Any],
    taskq_enable_logging: bool,
) -> Iterator[Worker]:
    with _worker(taskq_session_app, taskq_includes, taskq_worker_pool, taskq_worker_parameters,
                 taskq_enable_logging) as worker:  # fmt: skip
        yield worker


@pytest.fixture
def depends_on_current_app(taskq_app: Taskq) -> Taskq:
    """For code that uses the default app (``current_app()``): ``taskq_app`` is it."""
    taskq_app.set_default()
    return taskq_app


@contextlib.contextmanager
def _worker(
    app: Taskq, includes: Sequence[str], pool: str, parameters: Mapping[str, Any], logs: bool
) -> Iterator[Worker]:
    if includes:
        app.conf.include = (*app.conf.include, *includes)
    options = {"pool": pool, "loglevel": "INFO" if logs else None, **parameters}
    with start_worker(app, **options) as worker:
        yield worker
