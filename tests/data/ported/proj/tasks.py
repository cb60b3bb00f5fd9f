from taskq import shared_task
from taskq.utils.log import get_task_logger

from .celery import app

logger = get_task_logger(__name__)


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@shared_task(bind=True, max_retries=3, default_retry_delay=0)
def greet(self, name):
    if self.request.retries < 1:
        raise self.retry(exc=ConnectionError("flaky"))
    logger.info("greeting %s", name)
    return f"hello {name}"
