"""Remote control: the commands that change the worker (control.py has the panel and the
inspect commands). Replies are Celery 5.7's: ``{"ok": text}`` or ``{"error": text}``.

Like every command they run on the consumer thread, between broker reads, so they change
the consumer's state directly: no locks, no race with a task being reserved.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..amqp import make_queue
from . import revokes
from .control import ControlPanel, command, ok
from .state import matching_stamps
from .strategy import parse_rate, strategy_for

if TYPE_CHECKING:
    from .request import Request

logger = logging.getLogger(__name__)


def nok(text: str) -> dict[str, Any]:
    return {"error": text}


@command
def cmd_revoke(
    panel: ControlPanel,
    task_id: Any = None,
    terminate: bool = False,
    signal: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    ids = [task_id] if isinstance(task_id, str) else [str(i) for i in task_id or ()]
    consumer = panel.consumer
    held_here = {r.id for _, r in panel.requests()}
    panel.state.revoked.add(ids)
    consumer.acknowledge_revokes()
    dropped = revokes.drop_revoked(consumer)
    for one in ids:
        if one not in held_here:
            revokes.mark_elsewhere(consumer, one)
    logger.info("Tasks flagged as revoked: %s", ", ".join(ids))
    if dropped:
        logger.info("Revoked before they ran: %s", ", ".join(dropped))
    if terminate:
        killed = revokes.terminate(consumer, ids, signal or "SIGTERM")
        return ok(f"terminate: {', '.join(killed)}" if killed else "terminate: tasks unknown")
    return ok(f"tasks {set(ids)} flagged as revoked")  # Celery's text, a set's repr


@command
def cmd_terminate(panel: ControlPanel, signal: str, task_id: Any, **_: Any) -> dict[str, Any]:
    """``celery control terminate SIGNAL ID...``: revoke and kill, with that signal."""
    reply: dict[str, Any] = cmd_revoke(panel, task_id, terminate=True, signal=signal)
    return reply


@command
def cmd_enable_events(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    monitor = panel.consumer.monitor
    if monitor.task_events:
        return ok("task events already enabled")
    monitor.task_events = True
    logger.info("Task events enabled by remote control.")
    return ok("task events enabled")


@command
def cmd_disable_events(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    monitor = panel.consumer.monitor
    if not monitor.task_events:
        return ok("task events already disabled")
    monitor.task_events = False
    logger.info("Task events disabled by remote control.")
    return ok("task events disabled")


@command
def cmd_heartbeat(panel: ControlPanel, **_: Any) -> None:
    """A monitor that just started wants to see every worker now, not in 2 s."""
    panel.consumer.monitor.heartbeat()


@command
def cmd_shutdown(panel: ControlPanel, msg: str = "Got shutdown from remote", **_: Any) -> None:
    logger.warning(msg)
    panel.on_shutdown()


@command
def cmd_rate_limit(
    panel: ControlPanel, task_name: str = "", rate_limit: Any = None, **_: Any
) -> dict[str, Any]:
    try:
        parse_rate(rate_limit)
    except Exception as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    task = panel.app.tasks.get(task_name)
    if task is None:
        logger.error("Rate limit asked for an unknown task %s", task_name)
        return nok("unknown task")
    task.options = dataclasses.replace(task.options, rate_limit=rate_limit or None)
    _rebuild(panel, task_name)
    if not rate_limit:
        logger.info("Rate limit of %s removed by remote control", task_name)
        return ok("rate limit disabled successfully")
    logger.info("New rate limit for %s: %s", task_name, rate_limit)
    return ok("new rate limit set successfully")


@command
def cmd_time_limit(
    panel: ControlPanel,
    task_name: str = "",
    hard: float | None = None,
    soft: float | None = None,
    **_: Any,
) -> dict[str, Any]:
    task = panel.app.tasks.get(task_name)
    if task is None:
        logger.error("Time limits asked for an unknown task %s", task_name)
        return nok("unknown task")
    task.options = dataclasses.replace(task.options, time_limit=hard, soft_time_limit=soft)
    _rebuild(panel, task_name)
    logger.info("New time limits for %s: soft=%s hard=%s", task_name, soft, hard)
    return ok("time limits set successfully")


def _rebuild(panel: ControlPanel, name: str) -> None:
    # Limits are applied by the worker's main process (the rate when a task is received,
    # the time limits when it is handed to the pool), so its strategy is all that changes.
    consumer = panel.consumer
    consumer.strategies[name] = strategy_for(panel.app, consumer, panel.hostname, name)


@command
def cmd_add_consumer(
    panel: ControlPanel,
    queue: str = "",
    exchange: str | None = None,
    exchange_type: str | None = None,
    routing_key: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    if not queue:
        return nok("add_consumer needs a queue name")
    known = panel.app.declared_queues()
    source = next((q for q in known if q.name == queue), None)
    if source is None:
        kind = panel.app.conf.task_default_queue_type
        source = make_queue(queue, exchange, routing_key, exchange_type or "direct", kind)
    if not panel.consumer.consume_queue(source):
        return ok(f"already consuming from {queue!r}")
    return ok(f"add consumer {queue}")


@command
def cmd_cancel_consumer(panel: ControlPanel, queue: str = "", **_: Any) -> dict[str, Any]:
    panel.consumer.cancel_queue(queue)
    return ok(f"no longer consuming from {queue}")


@command
def cmd_pool_grow(panel: ControlPanel, n: int = 1, **_: Any) -> dict[str, Any]:
    return _resize(panel, int(n), "pool will grow")


@command
def cmd_pool_shrink(panel: ControlPanel, n: int = 1, **_: Any) -> dict[str, Any]:
    return _resize(panel, -int(n), "pool will shrink")


def _resize(panel: ControlPanel, change: int, done: str) -> dict[str, Any]:
    consumer = panel.consumer
    pool = consumer.pool
    multiplier = consumer.options.prefetch_count // max(pool.options.concurrency, 1)
    try:
        changed = pool.resize(change)
    except ValueError as exc:
        return nok(str(exc))
    finally:
        # Whatever changed, partly or at all, the prefetch window follows the pool's size.
        rule = consumer.prefetch.rule
        base = pool.limit * multiplier
        moved = base - rule.base
        consumer.prefetch.rule = dataclasses.replace(
            rule, base=base, processes=pool.limit, ceiling=pool.capacity * pool.batch_size
        )
        if consumer.qos is not None and moved:
            if moved > 0:
                consumer.qos.increment_eventually(moved)
            else:
                consumer.qos.decrement_eventually(-moved)
    logger.info("Pool resized by %+d to %d process(es) by remote control", changed, pool.limit)
    return ok(done)


@command
def cmd_autoscale(
    panel: ControlPanel, max: Any = None, min: Any = None, **_: Any
) -> dict[str, Any]:
    # As a Celery worker started without --autoscale answers: taskq has no autoscaler.
    return nok("Autoscale not enabled: taskq workers have a fixed pool; use pool_grow/pool_shrink")


@command
def cmd_revoke_by_stamped_headers(
    panel: ControlPanel,
    headers: Any = None,
    terminate: bool = False,
    signal: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Revoke every task stamped with one of these values: ``{"stamp": value or [values]}``
    (or Celery's older list form, ``["stamp=value", ...]``)."""
    if isinstance(headers, list):
        headers = dict(str(h).split("=", 1) for h in headers if "=" in str(h))
    if not isinstance(headers, dict) or not headers:
        return nok("revoke_by_stamped_headers needs headers: {stamp: value or [values]}")
    consumer = panel.consumer
    panel.state.revoked_stamps.add(headers)
    dropped = revokes.drop_revoked(consumer)
    logger.info("Stamped headers flagged as revoked: %s", headers)
    if dropped:
        logger.info("Revoked before they ran: %s", ", ".join(dropped))
    if not terminate:
        return ok(f"headers {headers} flagged as revoked, but not terminated")
    killed: defaultdict[str, set[Any]] = defaultdict(set)

    def chosen(request: Request) -> bool:
        msg = request.message
        found = matching_stamps(headers, msg.stamped_headers, msg.stamps)
        for header, values in found.items():
            killed[header].update(values)
        return bool(found)

    revokes.terminate_where(consumer, chosen, signal or "SIGTERM")
    if not killed:
        return ok(f"headers {headers} were not terminated")
    return ok(f"headers {killed} revoked")  # Celery's text, a defaultdict's repr
