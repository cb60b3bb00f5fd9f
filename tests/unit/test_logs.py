"""Logging as a Celery worker sets it up: task loggers, formats, a log file, the signals."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import Taskq, get_task_logger, signals
from taskq.log import TASK_LOGGER, MaskingFormatter, setup_logging
from taskq.utils.log import get_task_logger as celery_style_import


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    root, task = logging.getLogger(), logging.getLogger(TASK_LOGGER)
    saved = (list(root.handlers), root.level, list(task.handlers), task.level, task.propagate)
    yield
    for logger in (root, task):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            if handler not in saved[0]:
                handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    for handler in saved[2]:
        task.addHandler(handler)
    root.setLevel(saved[1])
    task.setLevel(saved[3])
    task.propagate = saved[4]


@pytest.fixture
def app() -> Taskq:
    return Taskq("logs", broker="memory://", set_as_current=False)


def test_a_task_logger_is_under_the_task_logger_and_importable_as_in_celery() -> None:
    logger = get_task_logger("proj.tasks")
    assert logger.name == "proj.tasks" and logger.parent is logging.getLogger(TASK_LOGGER)
    assert celery_style_import is get_task_logger


def test_a_log_file_with_the_worker_and_the_task_formats(app: Taskq, tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    setup_logging(app, "INFO", str(path))
    logger = get_task_logger("proj.tasks.logging")

    @app.task(name="proj.say")
    def say(word: str) -> None:
        logger.info("saying %s to redis://user:secret@host:6379/0", word)

    say.apply(("hi",), task_id="abc-123")
    logging.getLogger("taskq.worker.consumer").info("a worker line")
    logger.info("outside any task")
    text = path.read_text()
    assert "INFO/MainProcess] proj.say[abc-123]: saying hi to redis://user:**@host" in text
    assert "secret" not in text
    assert "INFO/MainProcess] a worker line" in text
    assert "???[???]: outside any task" in text
    assert "\x1b[" not in text  # never colour in a file


def test_colour_by_level_on_request() -> None:
    formatter = MaskingFormatter("%(levelname)s %(message)s", color=True)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "broken", None, None)
    assert formatter.format(record) == "\x1b[31mERROR broken\x1b[0m"
    record.levelno = logging.INFO
    assert formatter.format(record) == "ERROR broken"


def test_a_setup_logging_receiver_configures_instead(app: Taskq) -> None:
    got: list[dict[str, Any]] = []

    def configure(**kw: Any) -> None:
        got.append(kw)

    before = list(logging.getLogger().handlers)
    signals.setup_logging.connect(configure)
    try:
        setup_logging(app, "DEBUG")
    finally:
        signals.setup_logging.disconnect(configure)
    assert logging.getLogger().handlers == before
    assert got[0]["loglevel"] == logging.DEBUG and got[0]["logfile"] is None


def test_not_hijacking_the_root_logger_and_the_after_setup_signals(
    app: Taskq, tmp_path: Path
) -> None:
    app.conf.worker_hijack_root_logger = False
    seen: list[tuple[str, str]] = []

    def after(signal: signals.Signal, logger: logging.Logger, **kw: Any) -> None:
        seen.append((signal.name, logger.name))

    signals.after_setup_logger.connect(after)
    signals.after_setup_task_logger.connect(after)
    before = list(logging.getLogger().handlers)
    try:
        setup_logging(app, "INFO", str(tmp_path / "w.log"))
    finally:
        signals.after_setup_logger.disconnect(after)
        signals.after_setup_task_logger.disconnect(after)
    assert logging.getLogger().handlers == before
    assert seen == [("after_setup_logger", "root"), ("after_setup_task_logger", TASK_LOGGER)]
