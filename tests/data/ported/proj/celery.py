# Celery's "Next steps" proj/celery.py, ported: only the import and the class changed.
from taskq import Taskq

app = Taskq(
    "proj",
    broker="redis://localhost:6379/0",
    backend="redis://localhost:6379/0",
    include=["proj.tasks"],
)

# Optional configuration, see the application user guide.
app.conf.update(
    result_expires=3600,
)
