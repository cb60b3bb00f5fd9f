"""Logging: task loggers whose lines name their task, and a worker's log set up as Celery's.

``get_task_logger(__name__)`` in a tasks module gives a logger under ``taskq.task``; on a
worker its lines carry the running task's name and id (``worker_task_log_format``).
Every part of taskq logs under its module's name (``taskq.worker.consumer``, ...), so one
can be silenced: ``logging.getLogger("taskq.worker.prefetch").setLevel("WARNING")``.

``setup_logging`` is what ``taskq worker`` calls at start: a project that connects
``setup_logging`` (the signal) configures logging itself and taskq touches nothing;
otherwise the root logger gets one handler (stderr or ``-f FILE``), coloured by level on
a terminal, unless ``worker_hijack_root_logger`` is off. Every line has URLs masked.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from . import signals
from .url import scrub

if TYPE_CHECKING:
    from .app import Taskq

TASK_LOGGER = "taskq.task"
_COLORS = {
    logging.DEBUG: "\x1b[34m",  # blue
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[35m",  # magenta
}
_RESET = "\x1b[0m"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a tasks module: under ``taskq.task``, so its lines name their task."""
    if name == TASK_LOGGER or name.startswith(TASK_LOGGER + "."):
        return logging.getLogger(name)
    logger = logging.getLogger(name)
    # Celery's way: the module's own logger, with the task logger as its parent, so the
    # task format applies whatever the module is called.
    logger.parent = logging.getLogger(TASK_LOGGER)
    return logger


class MaskingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with every URL in them masked; colour if asked."""

    def __init__(self, fmt: str, color: bool = False):
        super().__init__(fmt)
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        text = scrub(super().format(record))
        if self.color and record.levelno in _COLORS:
            return f"{_COLORS[record.levelno]}{text}{_RESET}"
        return text


class TaskFilter(logging.Filter):
    """Gives each record ``task_name`` and ``task_id``: the app's running task, or ``???``."""

    def __init__(self, app: Taskq):
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        context = self.app.current_context()
        record.task_name = (context.task if context else None) or "???"
        record.task_id = (context.id if context else None) or "???"
        return True


def setup_logging(
    app: Taskq, loglevel: str | int, logfile: str | None = None, colorize: bool | None = None
) -> None:
    """The worker's (and beat's) logging, as Celery sets it up, from the app's settings."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    c = app.conf
    if colorize is None:
        colorize = c.worker_log_color
    if signals.setup_logging.receivers:
        # The project configures logging itself (dictConfig, structlog, ...).
        signals.setup_logging.send(
            sender=None, loglevel=level, logfile=logfile, format=c.worker_log_format,
            colorize=bool(colorize),
        )  # fmt: skip
        return
    stream: TextIO | None = None if logfile else sys.stderr
    if colorize is None:
        colorize = stream is not None and stream.isatty()
    root = logging.getLogger()
    if c.worker_hijack_root_logger:
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(_handler(logfile, stream, c.worker_log_format, colorize))
        root.setLevel(level)
    _announce(signals.after_setup_logger, root, level, logfile, c.worker_log_format, colorize)
    task_logger = logging.getLogger(TASK_LOGGER)
    for old in list(task_logger.handlers):
        task_logger.removeHandler(old)
    handler = _handler(logfile, stream, c.worker_task_log_format, colorize)
    handler.addFilter(TaskFilter(app))
    task_logger.addHandler(handler)
    task_logger.propagate = False  # one line per record, in the task format
    task_logger.setLevel(level)
    _announce(
        signals.after_setup_task_logger, task_logger, level, logfile, c.worker_task_log_format,
        colorize,
    )  # fmt: skip


def _handler(logfile: str | None, stream: TextIO | None, fmt: str, color: bool) -> logging.Handler:
    handler: logging.Handler = (
        logging.FileHandler(logfile, encoding="utf-8") if logfile else logging.StreamHandler(stream)
    )
    handler.setFormatter(MaskingFormatter(fmt, color=color and not logfile))
    return handler


def _announce(signal: signals.Signal, logger: logging.Logger, *args: Any) -> None:
    level, logfile, fmt, colorize = args
    signal.send(
        sender=None, logger=logger, loglevel=level, logfile=logfile, format=fmt,
        colorize=colorize,
    )  # fmt: skip


__all__ = ["TASK_LOGGER", "MaskingFormatter", "TaskFilter", "get_logger", "get_task_logger",
           "setup_logging"]  # fmt: skip
