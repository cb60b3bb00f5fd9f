"""Every setting taskq reads, with its default, in one table.

Names follow Celery's lowercase settings wherever the concept is the same, so a Celery
config module mostly works as it is. Objects that belong to an app (the app, its tasks,
the worker and its consumer) read it through ``app.conf``; the layers below them (amqp,
backends, pools, transports) take explicit arguments.
"""

from __future__ import annotations

import difflib
import os
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Any

from kombu import Queue

from .celery_settings import CELERY_NAMES, OLD_NAMES
from .exceptions import ConfigurationError
from .serializers import serializer_name

Check = Callable[[Any], Any]


def _any(value: Any) -> Any:
    return value


def _optional(check: Check) -> Check:
    def run(value: Any) -> Any:
        return None if value is None else check(value)

    return run


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    }:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ValueError("expected a boolean")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a whole number")
    number = int(value)
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a whole number")
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number of at least 0")
    return number


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected seconds (a number or a timedelta)")
    seconds = float(value)
    if seconds < 0:
        raise ValueError("expected a non-negative number of seconds")
    return seconds


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("expected a dict")
    return dict(value)


def _beat_schedule(value: Any) -> dict[str, Any]:
    from .beat import Entry  # only apps with a schedule load the scheduler

    entries = _dict(value)
    for name, spec in entries.items():
        Entry.from_dict(name, spec)  # says what is wrong, with the entry's name
    return entries


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _one_of(*choices: str) -> Check:
    def run(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return str(value)

    return run


def _timezone(value: Any) -> str:
    if not isinstance(value, str | tzinfo):
        raise ValueError("expected a time zone name such as 'Europe/Paris'")
    name = value if isinstance(value, str) else str(getattr(value, "key", value))
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("no such time zone (an IANA name such as 'Europe/Paris')") from None
    return name


def _queues(value: Any) -> tuple[Any, ...]:
    """Names (a list or a comma-separated string) or kombu ``Queue`` objects, as Celery's."""
    if isinstance(value, str):
        return _str_list(value)
    items = [value] if isinstance(value, Queue) else value
    if not isinstance(items, Iterable) or not all(isinstance(q, str | Queue) for q in items):
        raise ValueError("expected queue names or kombu Queue objects")
    return tuple(items)


def _routes(value: Any) -> Any:
    if isinstance(value, Mapping) or callable(value):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(r, Mapping) or callable(r) for r in value
    ):
        return tuple(value)
    raise ValueError("expected a dict, a router function, or a list of them")


def _serializer(value: Any) -> str:
    # JSON by default; msgpack or pickle for task messages or results when asked
    # (serializers.py; the pickle rule is checked where a client or a backend starts).
    return serializer_name(_str(value))


def _accept(value: Any) -> tuple[str, ...]:
    names = _str_list(value)
    for name in names:
        serializer_name(name)
    return names


# Mirrors taskq/security.py:DIGESTS, which imports cryptography (an extra): a setting is
# checked when it is set, where cryptography may not be installed yet.
DIGESTS = (
    "sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256",
    "sha3_224", "sha3_256", "sha3_384", "sha3_512",
)  # fmt: skip


def _digest(value: Any) -> str:
    name = _str(value).lower()
    if name not in DIGESTS:
        raise ValueError(f"expected one of {', '.join(DIGESTS)}")
    return name


def _password(value: Any) -> str | bytes:
    if not isinstance(value, str | bytes):
        raise ValueError("expected a string or bytes")
    return value


def _delivery_mode(value: Any) -> int:
    modes = {1: 1, 2: 2, "transient": 1, "persistent": 2}
    if value in modes:
        return modes[value]
    raise ValueError("expected 1 (transient) or 2 (persistent)")


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Check
    doc: str


DAY = 86400.0

SETTINGS: dict[str, Setting] = {
    # the app
    "imports": Setting((), _str_list, "Modules of tasks the worker imports at start."),
    "include": Setting((), _str_list, "More modules of tasks (Celery's include=[...])."),
    # periodic tasks (taskq beat, worker -B)
    "beat_schedule": Setting(
        {}, _beat_schedule, "Periodic tasks: name -> {task, schedule, args, kwargs, options}."
    ),
    "beat_max_loop_interval": Setting(
        300.0, _seconds, "Longest sleep of the scheduler between two looks at the schedule."
    ),
    "beat_claim_lease": Setting(
        10.0,
        _seconds,
        "Seconds a beat holds a due time it claimed before another may send it.",
    ),
    "timezone": Setting(
        None, _optional(_timezone), "Time zone of schedules (an IANA name); default UTC."
    ),
    "enable_utc": Setting(
        True, _bool, "Off with no timezone: schedules read local time (as Celery's)."
    ),
    # broker
    "embedded_data_dir": Setting(
        None,
        _optional(_str),
        "Folder of the embedded broker and result files (default ~/.local/share/taskq/<main>).",
    ),
    "broker_url": Setting(
        None, _optional(_str), "Broker URL; unset means the embedded SQLite broker."
    ),
    "broker_transport_options": Setting({}, _dict, "Options passed to the kombu transport."),
    "broker_connection_retry_on_startup": Setting(
        True, _bool, "Retry the first connection at worker start."
    ),
    "broker_connection_retry": Setting(True, _bool, "Reconnect when the worker loses the broker."),
    "broker_connection_max_retries": Setting(
        100,
        _optional(_non_negative_int),
        "Reconnect attempts before the worker gives up (None: forever).",
    ),
    "broker_connection_timeout": Setting(
        4.0, _seconds, "Seconds to wait for a TCP connection to the broker."
    ),
    "broker_pool_limit": Setting(
        10, _positive_int, "Connections kept in the client's connection pool."
    ),
    "broker_heartbeat": Setting(60.0, _seconds, "AMQP heartbeat interval in seconds (0 disables)."),
    "task_publish_retry": Setting(True, _bool, "Retry a publish when the connection fails."),
    "task_publish_retry_policy": Setting(
        {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2},
        _dict,
        "kombu retry policy for publishing: max_retries, interval_start, interval_step,"
        " interval_max.",
    ),
    # serialization
    "task_serializer": Setting(
        "json", _serializer, "Serializer of task messages: json, msgpack, pickle or auth."
    ),
    "result_serializer": Setting(
        "json", _serializer, "Serializer of stored results: json, msgpack or pickle."
    ),
    "accept_content": Setting(
        ("json",), _accept, "Serializers (or content types) a worker decodes."
    ),
    # message signing (app.setup_security, taskq/security.py)
    "security_key": Setting(
        None, _optional(_str), "Path of the PEM private key that signs task messages."
    ),
    "security_key_password": Setting(
        None, _optional(_password), "Password of an encrypted security_key."
    ),
    "security_certificate": Setting(
        None, _optional(_str), "Path of the PEM certificate of security_key."
    ),
    "security_cert_store": Setting(
        None, _optional(_str), "Folder, file or glob of the certificates a worker trusts."
    ),
    "security_digest": Setting("sha256", _digest, "Digest of the signatures (sha256)."),
    "result_accept_content": Setting(
        None,
        _optional(_accept),
        "Serializers (or content types) a result reader decodes (None: accept_content).",
    ),
    "task_compression": Setting(
        None, _optional(_one_of("gzip", "bzip2", "zlib")), "Compress message bodies."
    ),
    # routing
    "task_default_queue": Setting(
        "taskq", _str, "Queue for tasks with no route. Set to 'celery' to share Celery's queue."
    ),
    "task_default_exchange": Setting(
        None, _optional(_str), "Exchange for the default queue (default: the queue name)."
    ),
    "task_default_exchange_type": Setting(
        "direct", _one_of("direct", "topic", "fanout"), "Type of the default exchange."
    ),
    "task_default_queue_type": Setting(
        "classic",
        _one_of("classic", "quorum"),
        "RabbitMQ type of the queues taskq declares: quorum queues are replicated (Raft).",
    ),
    "task_default_routing_key": Setting(
        None, _optional(_str), "Routing key of the default queue (default: the queue name)."
    ),
    "task_default_delivery_mode": Setting(2, _delivery_mode, "2 = persistent, 1 = transient."),
    "task_default_priority": Setting(
        None, _optional(_non_negative_int), "Priority given to messages without one."
    ),
    "task_queues": Setting(
        None,
        _optional(_queues),
        "Queues a worker consumes when -Q is not given: names or kombu Queue objects.",
    ),
    "task_create_missing_queues": Setting(
        True, _bool, "Create a queue named by a route or queue= on first use."
    ),
    "task_routes": Setting(
        None, _optional(_routes), "Task name (glob) -> {'queue': ...}, or router functions."
    ),
    # execution
    "task_always_eager": Setting(
        False, _bool, "delay()/apply_async() run the task here and now, not on a worker (tests)."
    ),
    "task_eager_propagates": Setting(
        False, _bool, "In eager mode, a failing task raises at the call instead of in get()."
    ),
    "task_acks_late": Setting(
        True, _bool, "Ack after the task ran (at-least-once). False acks when it starts."
    ),
    "task_acks_on_failure_or_timeout": Setting(
        True, _bool, "With late ack, also ack tasks that failed or timed out."
    ),
    "task_reject_on_worker_lost": Setting(
        True, _bool, "Requeue a late-ack task whose process died."
    ),
    "task_time_limit": Setting(
        None, _optional(_seconds), "Hard time limit in seconds: the process is killed."
    ),
    "task_soft_time_limit": Setting(
        None, _optional(_seconds), "Soft time limit: SoftTimeLimitExceeded is raised in the task."
    ),
    "task_ignore_result": Setting(False, _bool, "Store no result for tasks by default."),
    "task_store_errors_even_if_ignored": Setting(
        False, _bool, "Store failures of tasks that ignore results."
    ),
    "task_track_started": Setting(False, _bool, "Store STARTED when a task starts."),
    "task_max_deliveries": Setting(
        5,
        _optional(_positive_int),
        "Deliveries a task may use up without finishing before it is dead-lettered.",
    ),
    "task_dead_letter_queue": Setting(
        "taskq.dead", _str, "Queue that keeps poison, malformed and unknown messages."
    ),
    "task_max_message_size": Setting(
        10 * 1024 * 1024,
        _optional(_positive_int),
        "Largest task message body in bytes; bigger ones are refused (None: no limit).",
    ),
    "task_default_rate_limit": Setting(
        None, _optional(_str), "Rate limit for tasks without one, e.g. '10/s'."
    ),
    # results
    "result_backend": Setting(
        None,
        _optional(_str),
        "Result backend URL: redis://, sqlite:///path, rpc://, memory://, or None.",
    ),
    "result_persistent": Setting(
        False, _bool, "rpc:// results as persistent messages (they survive a broker restart)."
    ),
    "result_expires": Setting(
        DAY, _optional(_seconds), "Seconds results are kept (None: forever)."
    ),
    "worker_state_db": Setting(
        None,
        _optional(_str),
        "File where the worker keeps its revoked task ids between runs (Celery's --statedb).",
    ),
    "worker_enable_remote_control": Setting(
        True, _bool, "Answer broadcast commands (celery inspect/control, taskq inspect/control)."
    ),
    "result_chord_retry_interval": Setting(
        1.0,
        _seconds,
        "Seconds between checks of celery.chord_unlock (Celery's chord join "
        "for backends without a native one).",
    ),
    "result_extended": Setting(
        False, _bool, "Also store name, args, kwargs, worker, retries, queue."
    ),
    "result_backend_transport_options": Setting(
        {}, _dict, "Options for the result backend client."
    ),
    "result_backend_always_retry": Setting(
        True,
        _bool,
        "Store a result again, with backoff, when the backend fails in a way that may pass "
        "(lost connection, server loading or out of memory, disk full).",
    ),
    "result_backend_max_retries": Setting(
        30,
        _optional(_non_negative_int),
        "Attempts after the first before a store is given up (None: for ever); with the "
        "default sleeps, about 3.5 minutes.",
    ),
    "result_backend_base_sleep_between_retries_ms": Setting(
        10, _non_negative_int, "First sleep between two store attempts, in ms; it doubles."
    ),
    "result_backend_max_sleep_between_retries_ms": Setting(
        10000, _non_negative_int, "Longest sleep between two store attempts, in ms."
    ),
    # worker
    "worker_log_format": Setting(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        _str,
        "Format of the worker's log lines (logging's % style).",
    ),
    "worker_task_log_format": Setting(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s",
        _str,
        "Format of task loggers' lines (get_task_logger): with the task's name and id.",
    ),
    "worker_hijack_root_logger": Setting(
        True, _bool, "The worker replaces the root logger's handlers with its own."
    ),
    "worker_log_color": Setting(
        None, _optional(_bool), "Colour log lines by level (None: when writing to a terminal)."
    ),
    "worker_concurrency": Setting(
        None, _optional(_positive_int), "Pool size (default: number of CPUs)."
    ),
    "worker_prefetch_multiplier": Setting(4, _positive_int, "Messages reserved per pool slot."),
    "worker_prefetch_seconds": Setting(
        0.1,
        _seconds,
        "For short tasks, reserve up to this much estimated work per process beyond the "
        "multiplier (0: the multiplier alone).",
    ),
    "worker_max_tasks_per_child": Setting(
        None, _optional(_positive_int), "Replace a pool child after this many tasks."
    ),
    "worker_max_memory_per_child": Setting(
        None, _optional(_positive_int), "Replace a child above this RSS in KiB."
    ),
    "worker_batch_size": Setting(
        16, _positive_int, "Most tasks handed to a prefork process at once (1: one by one)."
    ),
    "worker_pool": Setting("prefork", _one_of("prefork", "threads", "solo"), "Execution pool."),
    "worker_lost_wait": Setting(
        1.0, _seconds, "Seconds to wait for the result of a task whose process died."
    ),
    "worker_disable_rate_limits": Setting(False, _bool, "Ignore rate limits."),
    "worker_eta_horizon": Setting(
        600.0,
        _optional(_seconds),
        "ETA tasks due later than this many seconds are parked on the broker, not held "
        "(None: every ETA task is held until due, as Celery does).",
    ),
    "worker_detect_quorum_queues": Setting(
        True,
        _bool,
        "On RabbitMQ, a worker consuming a quorum queue uses per-consumer prefetch and parks "
        "ETA tasks in the broker's delay queues (quorum queues refuse global prefetch).",
    ),
    "broker_native_delayed_delivery_queue_type": Setting(
        "quorum",
        _one_of("classic", "quorum"),
        "Type of the delay queues (celery_delayed_0..27) that keep parked ETA tasks.",
    ),
    # remote control (Celery's names and defaults: a mixed fleet shares one mailbox)
    "control_exchange": Setting(
        "celery", _str, "Name of the remote-control mailbox: exchange <name>.pidbox."
    ),
    "control_queue_ttl": Setting(
        300.0,
        _optional(_seconds),
        "Seconds a control request or reply waits in its queue before the broker drops it.",
    ),
    "control_queue_expires": Setting(
        10.0,
        _optional(_seconds),
        "Seconds an unused node or reply queue lives before the broker deletes it.",
    ),
    "control_queue_durable": Setting(
        False, _bool, "Declare the control queues durable (not with control_queue_exclusive)."
    ),
    "control_queue_exclusive": Setting(
        True, _bool, "Declare the control queues exclusive to their connection."
    ),
    # events (Celery's names and defaults: Flower and `celery events` read them)
    "worker_send_task_events": Setting(
        False, _bool, "Send task events (task-received, -started, -succeeded...): -E."
    ),
    "task_send_sent_event": Setting(False, _bool, "Clients send a task-sent event per task."),
    "event_exchange": Setting("celeryev", _str, "Exchange that carries events."),
    "event_serializer": Setting("json", _str, "How events are encoded (json only)."),
    "event_queue_prefix": Setting("celeryev", _str, "Name prefix of event receivers' queues."),
    "event_queue_ttl": Setting(
        5.0, _optional(_seconds), "Seconds an event waits in a receiver's queue."
    ),
    "event_queue_expires": Setting(
        60.0, _optional(_seconds), "Seconds an unread receiver's queue lives."
    ),
}


ENVIRONMENT = {"TASKQ_BROKER_URL": "broker_url", "TASKQ_RESULT_BACKEND": "result_backend"}


def unknown_setting(name: str) -> ConfigurationError:
    if name in CELERY_NAMES:
        return ConfigurationError(
            f"{name!r} is a Celery setting that taskq does not implement yet; remove it, "
            "or see docs/celery.md for the settings taskq shares with Celery."
        )
    if name in OLD_NAMES and OLD_NAMES[name] in SETTINGS:
        return ConfigurationError(
            f"{name!r} is Celery's old name of {OLD_NAMES[name]!r}: set that instead."
        )
    close = difflib.get_close_matches(name.lower(), SETTINGS, n=1, cutoff=0.5)
    hint = (
        f" Did you mean {close[0]!r}?" if close else " See docs/configuration.md for every setting."
    )
    return ConfigurationError(f"Unknown setting {name!r}.{hint}")


def check_setting(name: str, value: Any) -> Any:
    setting = SETTINGS.get(name)
    if setting is None:
        raise unknown_setting(name)
    try:
        return setting.check(value)
    except ValueError as exc:
        raise ConfigurationError(f"Invalid value {value!r} for setting {name!r}: {exc}.") from None


class Config:
    """The settings of one app: attribute and mapping access, checked on every write.

    Precedence, highest first: values set in code (constructor, ``update``, attribute,
    ``config_from_object``), then the ``TASKQ_*`` environment variables, then defaults.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, **settings: Any):
        env = os.environ if environ is None else environ
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_env", {s: env[v] for v, s in ENVIRONMENT.items() if env.get(v)})
        self.update(settings)

    def __getattr__(self, name: str) -> Any:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        env: dict[str, Any] = object.__getattribute__(self, "_env")
        if name in env:
            return env[name]
        setting = SETTINGS.get(name)
        if setting is None:
            raise AttributeError(str(unknown_setting(name)))
        default = setting.default
        return dict(default) if isinstance(default, dict) else default

    def __setattr__(self, name: str, value: Any) -> None:
        self._values[name] = check_setting(name, value)

    def __getitem__(self, name: str) -> Any:
        if name not in SETTINGS:
            raise KeyError(str(unknown_setting(name)))
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in SETTINGS else default

    def update(self, settings: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        merged = {**(settings or {}), **more}
        checked = {name: check_setting(name, value) for name, value in merged.items()}
        self._values.update(checked)

    def is_set(self, name: str) -> bool:
        return name in self._values or name in self._env

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTINGS}
