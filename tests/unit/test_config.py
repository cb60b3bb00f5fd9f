from __future__ import annotations

import types
from datetime import timedelta

import pytest

from taskq import ConfigurationError, Taskq
from taskq.config import SETTINGS, Config


def test_defaults_are_safe_and_celery_named() -> None:
    conf = Config(environ={})
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.accept_content == ("json",)
    assert conf.task_serializer == "json"
    assert conf.result_expires == 86400.0
    assert conf.worker_prefetch_multiplier == 4
    assert conf.task_default_queue == "taskq"


def test_unknown_setting_names_the_closest_valid_one() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'broker_url'"):
        Config(environ={}, broker_ulr="redis://")
    conf = Config(environ={})
    with pytest.raises(ConfigurationError, match="task_acks_late"):
        conf.update(task_ack_late=True)
    with pytest.raises(ConfigurationError, match="worker_concurrency"):
        conf.worker_concurency = 3
    with pytest.raises(AttributeError, match="result_expires"):
        _ = conf.result_expire


def test_invalid_values_are_rejected_with_the_reason() -> None:
    conf = Config(environ={})
    with pytest.raises(ConfigurationError, match="worker_concurrency"):
        conf.worker_concurrency = 0
    with pytest.raises(ConfigurationError, match="expected one of json, msgpack, pickle"):
        conf.task_serializer = "yaml"
    with pytest.raises(ConfigurationError, match="expected one of"):
        conf.accept_content = ["json", "application/x-yaml"]
    with pytest.raises(ConfigurationError, match="expected one of json, msgpack, pickle"):
        conf.result_serializer = "yaml"
    with pytest.raises(ConfigurationError, match="result_accept_content"):
        conf.result_accept_content = ["json", "yaml"]
    with pytest.raises(ConfigurationError, match="boolean"):
        conf.task_acks_late = "sometimes"


def test_values_are_normalized() -> None:
    conf = Config(environ={}, result_expires=timedelta(hours=1), task_queues="a, b")
    assert conf.result_expires == 3600.0
    assert conf.task_queues == ("a", "b")
    conf.task_acks_late = "false"
    assert conf.task_acks_late is False


def test_precedence_code_over_environment_over_default() -> None:
    env = {"TASKQ_BROKER_URL": "redis://env:6379/0", "TASKQ_RESULT_BACKEND": "redis://env/1"}
    assert Config(environ=env).broker_url == "redis://env:6379/0"
    assert Config(environ=env, broker_url="amqp://code//").broker_url == "amqp://code//"
    assert Config(environ={}).broker_url is None


def test_environment_variables_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_BROKER_URL", "memory://")
    monkeypatch.setenv("TASKQ_RESULT_BACKEND", "memory://")
    app = Taskq("envapp")
    assert app.broker_url == "memory://"
    assert app.backend_url == "memory://"


def test_config_from_object_module_class_mapping_and_name() -> None:
    module = types.ModuleType("cfg")
    module.broker_url = "memory://"  # type: ignore[attr-defined]
    module.os = types  # type: ignore[attr-defined]  # imports are not settings
    module.HELPER_CONSTANT = 3  # type: ignore[attr-defined]  # nor are upper-case names
    app = Taskq("x")
    app.config_from_object(module)
    assert app.conf.broker_url == "memory://"

    class Settings:
        task_default_queue = "fromclass"

    app.config_from_object(Settings)
    assert app.conf.task_default_queue == "fromclass"
    app.config_from_object({"worker_concurrency": 3})
    assert app.conf.worker_concurrency == 3
    app.config_from_object("tests.unit.sample_config")
    assert app.conf.result_expires == 60.0
    with pytest.raises(ConfigurationError, match="task_time_limit"):
        app.config_from_object({"task_time_limt": 3})


def test_constructor_urls_and_settings() -> None:
    app = Taskq("p", broker="memory://", backend="memory://", worker_concurrency=5)
    assert (app.broker_url, app.backend_url, app.conf.worker_concurrency) == (
        "memory://",
        "memory://",
        5,
    )
    assert app.conf["worker_concurrency"] == 5
    with pytest.raises(KeyError):
        _ = app.conf["no_such_setting"]


def test_embedded_default_when_no_urls(tmp_path: object) -> None:
    app = Taskq("proj", embedded_data_dir=str(tmp_path))
    assert app.broker_url == f"sqlite:///{tmp_path}/broker.sqlite3"
    assert app.backend_url == f"sqlite:///{tmp_path}/results.sqlite3"
    # A broker given without a backend means results are off, as in Celery.
    assert Taskq("p2", broker="memory://").backend_url is None


def test_every_setting_has_a_doc_line() -> None:
    assert all(setting.doc for setting in SETTINGS.values())
