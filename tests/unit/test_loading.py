"""App loading as a Celery project does it: shared tasks and the default app, settings from a
namespace or an old-style module, task modules from include= and autodiscover_tasks, and
where `-A proj` finds the app."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import taskq
from taskq import ConfigurationError, Taskq, current_app, shared_task
from taskq.cli import find_app
from taskq.shared import SharedTask

pytestmark = pytest.mark.usefixtures("restore_shared_tasks")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for the test's packages; they leave sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_shared_task_is_on_apps_made_before_and_after_and_acts_for_the_default() -> None:
    before = Taskq("before", broker="memory://")

    @shared_task(name="loading.double")
    def double(x: int) -> int:
        return 2 * x

    after = Taskq("after", broker="memory://")
    assert "loading.double" in before.tasks and "loading.double" in after.tasks
    assert isinstance(double, SharedTask) and current_app() is after
    assert double(4) == 8  # a direct call runs the function
    assert double.app is after and double.name == "loading.double"
    before.set_default()
    assert double.app is before
    aside = Taskq("aside", broker="memory://", set_as_current=False)
    assert current_app() is before and "loading.double" in aside.tasks
    assert double.delay(3).id  # sent through the default app's broker


def test_a_shared_task_with_options_keeps_them() -> None:
    @shared_task(bind=True, max_retries=7)
    def bound(self: taskq.Task[..., int], x: int) -> int:
        return x

    app = Taskq("opts", broker="memory://")
    task = app.tasks[f"{__name__}.bound"]
    assert task.options.bind and task.max_retries == 7
    assert bound.max_retries == 7


def test_namespace_reads_only_its_names_lowercased() -> None:
    class DjangoSettings:
        DEBUG = True
        INSTALLED_APPS = ["polls"]
        CELERY_BROKER_URL = "memory://"
        CELERY_TASK_TIME_LIMIT = 30
        CELERY_TIMEZONE = "Europe/Paris"

    app = Taskq("ns")
    app.config_from_object(DjangoSettings(), namespace="CELERY")
    assert app.conf.broker_url == "memory://"
    assert (app.conf.task_time_limit, app.conf.timezone) == (30.0, "Europe/Paris")


def test_module_colon_attribute_and_silent(project: Path) -> None:
    write(project, {"site_settings.py": "class Conf:\n    CELERY_RESULT_EXPIRES = 60\n"})
    app = Taskq("colon")
    app.config_from_object("site_settings:Conf", namespace="CELERY")
    assert app.conf.result_expires == 60.0
    app.config_from_object("no_such_settings_module", silent=True)
    with pytest.raises(ConfigurationError, match="no_such_settings_module"):
        app.config_from_object("no_such_settings_module")


def test_old_upper_case_names_are_read_as_the_new_ones() -> None:
    app = Taskq("old")
    app.config_from_object({"BROKER_URL": "memory://", "CELERYD_CONCURRENCY": 3, "OTHER": 1})
    assert (app.conf.broker_url, app.conf.worker_concurrency) == ("memory://", 3)


def test_celery_settings_not_implemented_say_so() -> None:
    with pytest.raises(ConfigurationError, match="Celery setting that taskq does not implement"):
        Taskq("x", worker_autoscaler="x")
    with pytest.raises(ConfigurationError, match="Celery setting that taskq does not implement"):
        Taskq("x").config_from_object({"CELERY_WORKER_AUTOSCALER": "x"}, namespace="CELERY")
    with pytest.raises(ConfigurationError, match="Did you mean 'broker_url'"):
        Taskq("x", brocker_url="memory://")


def test_config_from_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Taskq("env")
    monkeypatch.setenv("LOADING_CONFIG", "tests.unit.sample_config")
    app.config_from_envvar("LOADING_CONFIG")
    assert app.conf.result_expires == 60.0  # from sample_config
    monkeypatch.delenv("LOADING_CONFIG")
    app.config_from_envvar("LOADING_CONFIG", silent=True)
    with pytest.raises(ConfigurationError, match="LOADING_CONFIG is not set"):
        app.config_from_envvar("LOADING_CONFIG")


def test_timezone_is_checked() -> None:
    assert Taskq("tz", timezone="America/New_York").conf.timezone == "America/New_York"
    with pytest.raises(ConfigurationError, match="no such time zone"):
        Taskq("tz", timezone="Mars/Olympus")


def test_include_and_autodiscovery_import_task_modules(project: Path) -> None:
    write(project, {
        "shop/__init__.py": "",
        "shop/tasks.py": "from taskq import shared_task\n@shared_task\ndef sell(): return 1\n",
        "blog/__init__.py": "",  # a package without tasks: skipped
        "extra_tasks.py": "from taskq import shared_task\n@shared_task\ndef extra(): return 2\n",
    })  # fmt: skip
    app = Taskq("found", broker="memory://", include=["extra_tasks"])
    app.autodiscover_tasks(lambda: ["shop", "blog"])
    assert "shop.tasks.sell" not in app.tasks  # found when a worker starts, not before
    assert app.import_task_modules() == ["extra_tasks", "shop.tasks"]
    assert {"shop.tasks.sell", "extra_tasks.extra"} <= set(app.tasks)


def test_a_missing_included_module_is_an_error_and_a_broken_one_raises_its_error(
    project: Path,
) -> None:
    app = Taskq("missing", broker="memory://", include=["nowhere_tasks"])
    with pytest.raises(ConfigurationError, match="Cannot import task module 'nowhere_tasks'"):
        app.import_task_modules()
    write(project, {"broken/__init__.py": "", "broken/tasks.py": "import not_installed_lib\n"})
    app = Taskq("broken", broker="memory://")
    app.autodiscover_tasks(["broken"], force=False)
    with pytest.raises(ModuleNotFoundError, match="not_installed_lib"):
        app.import_task_modules()


def test_find_app_looks_where_celery_looks(project: Path) -> None:
    write(project, {
        "proj_a/__init__.py": "",
        "proj_a/celery.py": "from taskq import Taskq\napp = Taskq('a', broker='memory://')\n",
        "proj_b/__init__.py": "from .taskq import app as taskq_app\n",
        "proj_b/taskq.py": "from taskq import Taskq\napp = Taskq('b', broker='memory://')\n",
        "proj_c.py": "from taskq import Taskq\nmine = Taskq('c', broker='memory://')\n",
        "proj_d.py": "from taskq import Taskq\nx = Taskq('d1')\ny = Taskq('d2')\n",
        "proj_e.py": "VALUE = 1\n",
    })  # fmt: skip
    assert find_app("proj_a").main == "a"
    assert find_app("proj_b").main == "b"
    assert find_app("proj_c").main == "c"
    assert find_app("proj_d:y").main == "d2"
    with pytest.raises(click.UsageError, match="Several Taskq apps"):
        find_app("proj_d")
    with pytest.raises(click.UsageError, match=r"proj_e\.celery"):
        find_app("proj_e")
