"""``celery.utils.log``'s loggers under taskq's name: ``from taskq.utils.log import
get_task_logger`` works as Celery's import did (the same functions as ``taskq.log``)."""

from ..log import get_logger, get_task_logger

__all__ = ["get_logger", "get_task_logger"]
