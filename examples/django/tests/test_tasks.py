# The project's tests, with the pytest plugin's fixtures (celery_* renamed taskq_*).
from polls.tasks import add, count_words, site_time_zone


def test_tasks_are_discovered(taskq_app):
    # shared tasks are on every app, the test app included
    assert {"polls.tasks.add", "polls.tasks.count_words"} <= set(taskq_app.tasks)


def test_add_on_a_worker(taskq_app, taskq_worker):
    assert add.delay(2, 3).get(timeout=10) == 5
    assert count_words.delay("one two three").get(timeout=10) == 3


def test_django_settings_in_a_task(taskq_app, taskq_worker):
    assert site_time_zone.delay().get(timeout=10) == {
        "task": "polls.tasks.site_time_zone",
        "time_zone": "Europe/Paris",
    }
