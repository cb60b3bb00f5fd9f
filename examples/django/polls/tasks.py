# A Django app's tasks, as Celery's guide writes them: @shared_task, no app import.
from django.conf import settings

from taskq import shared_task


@shared_task
def add(x, y):
    return x + y


@shared_task
def count_words(text):
    return len(text.split())


@shared_task(bind=True)
def site_time_zone(self):
    # Django is set up in the worker: its settings are readable in a task.
    return {"task": self.name, "time_zone": settings.TIME_ZONE}
