# Celery's Django guide: "This will make sure the app is always imported when Django
# starts so that shared_task will use this app." Ported: celery -> taskq.
from .taskq import app as taskq_app

__all__ = ("taskq_app",)
