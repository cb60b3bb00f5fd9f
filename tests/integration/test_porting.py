"""Celery project layouts, ported by renaming imports, run by a real `taskq -A proj worker`.

Two layouts: Celery's "Next steps" ``proj`` package (``proj/celery.py`` with ``include=``,
tasks on ``@app.task``) and a Django-style site (``site/taskq.py`` that reads ``CELERY_*``
names from a settings module and autodiscovers ``<app>.tasks`` modules of ``@shared_task``
functions). The client is a separate process importing the project, as a web app would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis

from taskq.serializers import CONTENT_TYPES
from tests.integration.helpers import ROOT, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

NEXT_STEPS = {
    "proj/__init__.py": "",
    "proj/celery.py": """
        from taskq import Taskq

        app = Taskq("proj", include=["proj.tasks"])  # broker from TASKQ_BROKER_URL
        app.conf.update(result_expires=3600)
    """,
    "proj/tasks.py": """
        from .celery import app

        @app.task
        def add(x, y):
            return x + y

        @app.task
        def xsum(numbers):
            return sum(numbers)
    """,
}

DJANGO_STYLE = {
    "site_one/__init__.py": "from .taskq import app as taskq_app\n\n__all__ = ('taskq_app',)\n",
    "site_one/settings.py": """
        import os

        DEBUG = True
        INSTALLED_APPS = ["polls", "pages"]
        CELERY_BROKER_URL = os.environ["SITE_BROKER"]
        CELERY_RESULT_BACKEND = os.environ["SITE_BACKEND"]
        CELERY_TIMEZONE = "Europe/Paris"
        CELERY_TASK_TIME_LIMIT = 30
    """,
    "site_one/taskq.py": """
        from taskq import Taskq

        from . import settings

        app = Taskq("site_one")
        app.config_from_object("site_one.settings", namespace="CELERY")
        app.autodiscover_tasks(lambda: settings.INSTALLED_APPS)
    """,
    "polls/__init__.py": "",
    "polls/tasks.py": """
        from taskq import shared_task

        @shared_task
        def count_votes(poll_id):
            return {"poll": poll_id, "votes": 3}

        @shared_task(bind=True)
        def whoami(self):
            return self.request.id
    """,
    "pages/__init__.py": "",  # an installed app without tasks
}


def lay_out(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def client(root: Path, code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter in the project folder; its output."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)]), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_celery_next_steps_layout(tmp_path: Path, redis_url: str, redis_backend_url: str) -> None:
    lay_out(tmp_path, NEXT_STEPS)
    env = {"TASKQ_BROKER_URL": redis_url, "TASKQ_RESULT_BACKEND": redis_backend_url}
    with WorkerProcess("proj", "-c", "2", cwd=tmp_path, env=env) as worker:
        assert "proj.tasks.add" in worker.log()  # the banner lists the included module's tasks
        out = client(tmp_path, """
            from proj.tasks import add, xsum
            print(add.delay(4, 4).get(timeout=60), xsum.delay([1, 2, 3]).get(timeout=60))
        """, env)  # fmt: skip
    assert out == "8 6"


def test_django_style_site_with_shared_tasks_and_autodiscovery(
    tmp_path: Path, redis_url: str, redis_backend_url: str
) -> None:
    lay_out(tmp_path, DJANGO_STYLE)
    env = {"SITE_BROKER": redis_url, "SITE_BACKEND": redis_backend_url}
    with WorkerProcess("site_one", "-c", "2", cwd=tmp_path, env=env) as worker:
        assert "polls.tasks.count_votes" in worker.log()
        out = client(tmp_path, """
            import site_one  # what Django's startup does: the app becomes the default
            from polls.tasks import count_votes, whoami
            result = whoami.delay()
            print(count_votes.delay(7).get(timeout=60), result.get(timeout=60) == result.id)
        """, env)  # fmt: skip
    assert out == "{'poll': 7, 'votes': 3} True"


def test_worker_log_file(tmp_path: Path, redis_url: str, redis_backend_url: str) -> None:
    lay_out(tmp_path, NEXT_STEPS)
    env = {"TASKQ_BROKER_URL": redis_url, "TASKQ_RESULT_BACKEND": redis_backend_url}
    logfile = tmp_path / "worker.log"
    worker = WorkerProcess("proj", "-c", "1", "-f", str(logfile), cwd=tmp_path, env=env)
    worker.start(wait_ready=False)
    try:
        wait_for(lambda: logfile.exists() and "Connected to" in logfile.read_text(), 60, "ready")
        out = client(tmp_path, "from proj.tasks import add; print(add.delay(1, 1).id)", env)
        wait_for(lambda: f"proj.tasks.add[{out}] succeeded" in logfile.read_text(), 60, "done")
    finally:
        worker.stop()
    assert "Connected to" not in worker.log()  # the log went to the file, not stderr


def test_the_django_example_on_a_real_worker(
    tmp_path: Path, redis_url: str, redis_backend_url: str
) -> None:
    # examples/django as its README runs it: taskq -A mysite worker, Django set up by the
    # worker, tasks found in the installed apps, settings read under CELERY_ names.
    project = Path(shutil.copytree(ROOT / "examples" / "django", tmp_path / "django"))
    env = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_backend_url,
           "DJANGO_SETTINGS_MODULE": "mysite.settings"}  # fmt: skip
    with WorkerProcess("mysite", "-c", "1", cwd=project, env=env) as worker:
        assert "polls.tasks.count_words" in worker.log()
        out = client(project, """
            import django
            django.setup()  # as manage.py does: imports mysite, whose app becomes the default
            from polls.tasks import count_words, site_time_zone
            words, zone = count_words.delay("a b c"), site_time_zone.delay()
            print(words.get(timeout=60), zone.get(timeout=60))
        """, env)  # fmt: skip
    assert out == "3 {'task': 'polls.tasks.site_time_zone', 'time_zone': 'Europe/Paris'}"


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_opted_in_serializers_on_a_prefork_worker(
    redis_url: str, redis_backend_url: str, serializer: str
) -> None:
    # A project that sends msgpack or pickle (and says both settings, for pickle): a real
    # prefork worker on Redis decodes it, from taskq's client and from Celery's; the result
    # comes back as JSON, Celery's default.
    from tests.integration.worker_tasks import itest_env, make_app

    queue = f"ser-{serializer}-{uuid.uuid4().hex[:6]}"
    settings = {"accept_content": ["json", serializer], "task_default_queue": queue}
    env = itest_env(redis_url, redis_backend_url, **settings)
    app = make_app(redis_url, redis_backend_url, None, task_serializer=serializer, **settings)
    result = app.tasks["itest.add"].delay(2, 2)
    waiting = [json.loads(raw) for raw in redis.Redis.from_url(redis_url).lrange(queue, 0, -1)]
    assert [m["content-type"] for m in waiting] == [CONTENT_TYPES[serializer]]
    # Celery 5.7's client sends the same way (a project's old clients, during a port).
    import celery

    capp = celery.Celery("sender", broker=redis_url, backend=redis_backend_url)
    capp.conf.update(task_serializer=serializer, accept_content=["json", serializer])
    from_celery = capp.send_task("itest.add", (3, 4), queue=queue)
    with WorkerProcess("tests.integration.worker_tasks", "-c", "1", env=env):
        assert result.get(timeout=60) == 4
        assert from_celery.get(timeout=60) == 7
    app.close()
    capp.close()
