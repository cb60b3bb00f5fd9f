# A Celery project's tests (after the Celery docs' "Testing" guide), ported by renaming
# celery -> taskq in imports and fixtures; nothing else changed.
import pytest
from proj.tasks import add, greet, mul, xsum

from taskq import chain, group


def test_add_called_directly():
    assert add(2, 2) == 4


def test_create_task(taskq_app, taskq_worker):
    @taskq_app.task
    def mul(x, y):
        return x * y

    taskq_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


def test_shared_task_runs_on_the_test_worker(taskq_app, taskq_worker):
    assert greet.delay("world").get(timeout=10) == "hello world"


def test_canvas_on_the_test_worker(taskq_app, taskq_worker):
    @taskq_app.task
    def double(x):
        return 2 * x

    assert chain(double.s(2), double.s(), double.s()).delay().get(timeout=10) == 16
    assert group(double.s(i) for i in range(3)).delay().get(timeout=10) == [0, 2, 4]


@pytest.mark.taskq(task_always_eager=True, task_eager_propagates=True)
def test_eager_app(taskq_app):
    @taskq_app.task
    def fail():
        raise ValueError("eager")

    with pytest.raises(ValueError):
        fail.delay()


def test_app_tasks_called_eagerly():
    assert mul.apply((3, 4)).get() == 12
    assert xsum.apply(([1, 2, 3],)).get() == 6
