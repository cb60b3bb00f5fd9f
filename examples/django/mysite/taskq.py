# Celery's proj/celery.py from its Django guide, ported: the import and the class changed.
import os

from taskq import Taskq

# Set the default Django settings module for the 'taskq' program.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Taskq("mysite")

# Using a string here means the worker doesn't have to serialize
# the configuration object to child processes.
# - namespace='CELERY' means all taskq-related configuration keys
#   should have a `CELERY_` prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")

# Load task modules from all registered Django apps.
app.autodiscover_tasks()


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
