"""Remote control, the client's side: commands broadcast to workers, replies gathered.

The protocol is Celery's "pidbox", spoken by kombu's own ``kombu.pidbox.Mailbox``: one JSON
request on the fanout exchange ``<control_exchange>.pidbox`` reaches every worker; those it
addresses act and, when it carries a ticket, answer ``{nodename: result}`` on the direct
exchange ``reply.<control_exchange>.pidbox``. So this client drives Celery's workers too.

Two shapes of answer, as in Celery: ``app.control.broadcast()`` and the commands on
``Control`` return a list of ``{node: result}`` in arrival order (``None`` unless
``reply=True``); ``app.control.inspect().X()`` merges them into ``{node: result}``, or
``None`` when no worker answered. The wait ends after ``limit`` replies (the number of
destinations, when given) or when none came for ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError
from kombu.matcher import match
from kombu.pidbox import Mailbox
from kombu.utils.functional import lazy

from .exceptions import BrokerUnavailable, ConfigurationError
from .url import mask_url, scrub

if TYPE_CHECKING:
    from .app import Taskq

TERM_SIGNAME = "SIGTERM"
DEFAULT_TIMEOUT = 1.0
# The keys of task_publish_retry_policy that kombu's ensure_connection also takes: the
# control client gives up on an unreachable broker as soon as publishing a task would.
_RETRY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max")

Replies = list[dict[str, Any]]
ByNode = dict[str, Any]
OnReply = Callable[[dict[str, Any]], object]
Dest = Sequence[str] | None  # node names; None: every worker


class DuplicateNodenameWarning(UserWarning):
    """Two workers answered under one node name, so their replies cannot be told apart."""


def flatten_reply(replies: Iterable[Mapping[str, Any]]) -> ByNode:
    """Merge ``[{node: result}, ...]`` into ``{node: result}`` (a later reply wins)."""
    nodes: ByNode = {}
    dupes: set[str] = set()
    for reply in replies:
        dupes.update(name for name in reply if name in nodes)
        nodes.update(reply)
    if dupes:
        warnings.warn(
            DuplicateNodenameWarning(
                f"Several workers replied as {', '.join(sorted(dupes))}: give each worker a "
                "name of its own with -n (e.g. -n w1@%h)."
            ),
            stacklevel=3,
        )
    return nodes


def make_mailbox(app: Taskq) -> Mailbox:
    """The app's mailbox, configured as Celery 5.7 configures its own.

    Bind it to a connection before use (``mailbox(connection)`` returns a bound copy); a
    worker makes its node from such a copy: ``make_mailbox(app)(conn).Node(hostname, ...)``.
    """
    c = app.conf
    if c.control_queue_durable and c.control_queue_exclusive:
        raise ConfigurationError(
            "control_queue_durable and control_queue_exclusive cannot both be True: the "
            "broker deletes an exclusive queue with its connection, so it cannot be durable."
        )
    return Mailbox(
        c.control_exchange,
        type="fanout",
        accept=list(c.accept_content),
        serializer=c.task_serializer,
        # Requests go out through the app's producer pool, as Celery's do. A lazy value,
        # looked up by each bound copy: the pool of the moment, also after app.close() or
        # a fork replaced the app's clients.
        producer_pool=lazy(lambda: app.amqp.producers),
        queue_ttl=c.control_queue_ttl,
        reply_queue_ttl=c.control_queue_ttl,
        queue_expires=c.control_queue_expires,
        reply_queue_expires=c.control_queue_expires,
        queue_exclusive=c.control_queue_exclusive,
        queue_durable=c.control_queue_durable,
    )


class Control:
    """``app.control``: send commands to the workers (taskq's or Celery's) and read replies."""

    def __init__(self, app: Taskq):
        self.app = app
        self.mailbox = make_mailbox(app)

    def inspect(
        self,
        destination: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        callback: OnReply | None = None,
        connection: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """Questions without side effects: ``app.control.inspect().active()``."""
        return Inspect(self, destination, timeout, callback, connection, limit, pattern, matcher)

    # -- the one way out
    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        limit: int | None = None,
        callback: OnReply | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_arguments: Any,
    ) -> Replies | None:
        """Send ``command`` to every worker (or to ``destination``, a list of node names).

        With ``reply`` it waits for the answers and returns them as ``[{node: result}]``;
        ``callback`` sees each as it comes. ``pattern`` with ``matcher`` (``"glob"``,
        ``"pcre"``) picks workers by name instead. Other keyword arguments become the
        command's, as in Celery. ``BrokerUnavailable`` when the broker is out of reach.
        """
        if destination is not None and not isinstance(destination, list | tuple):
            raise ValueError(f"destination must be a list of node names, not {destination!r}")
        destination = None if destination is None else list(destination)
        # An endless wait (kombu's reading of None) is never what a caller means.
        wait = DEFAULT_TIMEOUT if timeout is None else timeout
        body = {**(arguments or {}), **extra_arguments}
        # As Celery: sent only together (a request without them carries null for both).
        by_name = {"pattern": pattern, "matcher": matcher} if pattern and matcher else {}
        with self._connection(connection) as conn:
            if "fanout" not in conn.transport.implements.exchange_type:
                raise ConfigurationError(
                    "Remote control needs a broker with fanout exchanges (Redis, RabbitMQ); "
                    f"the {conn.transport.driver_type} broker at {mask_url(self.app.broker_url)} "
                    "has none, so no worker can be reached."
                )
            try:
                found: Replies | None = self.mailbox(conn)._broadcast(
                    command, body, destination, reply, wait, limit, callback,
                    channel=channel, **by_name,
                )  # fmt: skip
            except (OperationalError, OSError, *conn.connection_errors) as exc:
                raise self._unavailable(f"send {command!r} to the workers", exc) from exc
            return found

    @contextlib.contextmanager
    def _connection(self, connection: Any) -> Iterator[Any]:
        if connection is not None:
            yield connection
            return
        # Its own connection per command: closing it ends all the read of replies set up.
        conn = self.app.connection()
        try:
            policy = self.app.conf.task_publish_retry_policy
            try:
                conn.ensure_connection(**{k: policy[k] for k in _RETRY_KEYS if k in policy})
            except (OperationalError, OSError, *conn.connection_errors) as exc:
                raise self._unavailable("reach the broker", exc) from exc
            yield conn
        finally:
            conn.release()

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        reason = scrub(str(exc)).rstrip(".") or type(exc).__name__
        return BrokerUnavailable(
            f"Could not {what} at {mask_url(self.app.broker_url)}: {reason}. "
            "Check that the broker is running and broker_url is right."
        )

    # -- commands (arguments exactly as Celery 5.7 sends them)
    def ping(
        self, destination: Dest = None, timeout: float = DEFAULT_TIMEOUT, **kw: Any
    ) -> Replies | None:
        """``[{node: {"ok": "pong"}}, ...]`` from each worker that answered."""
        return self.broadcast(
            "ping", arguments={}, destination=destination, reply=True, timeout=timeout, **kw
        )

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Dest = None,
        terminate: bool = False,
        signal: str | None = TERM_SIGNAME,
        **kw: Any,
    ) -> Replies | None:
        """Tell workers never to run these tasks; ``terminate`` also kills a running one.

        Workers keep revoked ids in memory and drop the task when its message arrives or
        its ETA comes; a worker that is not running misses the revoke.
        """
        ids = task_id if isinstance(task_id, str) else list(task_id)
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
        return self.broadcast("revoke", arguments=arguments, destination=destination, **kw)

    def terminate(
        self,
        task_id: str | Iterable[str],
        destination: Dest = None,
        signal: str | None = TERM_SIGNAME,
        **kw: Any,
    ) -> Replies | None:
        """``revoke(..., terminate=True)``: stop the task where it runs, with ``signal``."""
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kw)

    def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any],
        destination: Dest = None,
        terminate: bool = False,
        signal: str | None = TERM_SIGNAME,
        **kw: Any,
    ) -> Replies | None:
        """Revoke the tasks whose stamped headers match ``headers`` (Celery 5.3+)."""
        arguments = {"headers": dict(headers), "terminate": terminate, "signal": signal}
        return self.broadcast(
            "revoke_by_stamped_headers", arguments=arguments, destination=destination, **kw
        )

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: Dest = None,
        **kw: Any,
    ) -> Replies | None:
        """Set a task's rate limit on the workers: ``"10/s"``, ``"100/m"``; 0 lifts it."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast("rate_limit", arguments=arguments, destination=destination, **kw)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Dest = None,
        **kw: Any,
    ) -> Replies | None:
        """Set a task's soft and hard time limits (seconds) on the workers."""
        arguments = {"task_name": task_name, "hard": hard, "soft": soft}
        return self.broadcast("time_limit", arguments=arguments, destination=destination, **kw)

    def shutdown(self, destination: Dest = None, **kw: Any) -> Replies | None:
        """Warm shutdown: the workers finish what they run, then exit."""
        return self.broadcast("shutdown", arguments={}, destination=destination, **kw)

    def pool_grow(self, n: int = 1, destination: Dest = None, **kw: Any) -> Replies | None:
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination, **kw)

    def pool_shrink(self, n: int = 1, destination: Dest = None, **kw: Any) -> Replies | None:
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination, **kw)

    def autoscale(self, max: int, min: int, destination: Dest = None, **kw: Any) -> Replies | None:
        """Change the autoscaler's bounds (``max`` and ``min`` are Celery's names)."""
        arguments = {"max": max, "min": min}
        return self.broadcast("autoscale", arguments=arguments, destination=destination, **kw)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: Dest = None,
        **kw: Any,
    ) -> Replies | None:
        """Start consuming ``queue`` (``options``: more ``kombu.Queue.from_dict`` keys)."""
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self.broadcast("add_consumer", arguments=arguments, destination=destination, **kw)

    def cancel_consumer(self, queue: str, destination: Dest = None, **kw: Any) -> Replies | None:
        """Stop consuming ``queue``."""
        return self.broadcast(
            "cancel_consumer", arguments={"queue": queue}, destination=destination, **kw
        )

    def enable_events(self, destination: Dest = None, **kw: Any) -> Replies | None:
        return self.broadcast("enable_events", arguments={}, destination=destination, **kw)

    def disable_events(self, destination: Dest = None, **kw: Any) -> Replies | None:
        return self.broadcast("disable_events", arguments={}, destination=destination, **kw)

    def heartbeat(self, destination: Dest = None, **kw: Any) -> Replies | None:
        """Ask the workers to send a worker-heartbeat event now."""
        return self.broadcast("heartbeat", arguments={}, destination=destination, **kw)


@dataclass
class Inspect:
    """Questions to the workers; each answer is ``{node: result}``, or None if none came."""

    control: Control
    destination: Sequence[str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    callback: OnReply | None = None
    connection: Any = None
    limit: int | None = None
    pattern: str | None = None
    matcher: str | None = None

    def request(self, command: str, **arguments: Any) -> ByNode | None:
        """Send any inspect ``command`` with ``arguments``; the replies by node."""
        replies = self.control.broadcast(
            command, arguments, self.destination, self.connection, reply=True,
            timeout=self.timeout, limit=self.limit, callback=self.callback,
            pattern=self.pattern, matcher=self.matcher,
        )  # fmt: skip
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if self.pattern:
            return {n: r for n, r in by_node.items() if match(n, self.pattern, self.matcher)}
        return by_node

    def ping(self, destination: Sequence[str] | None = None) -> ByNode | None:
        """``{node: {"ok": "pong"}}``."""
        if destination:
            self.destination = destination
        return self.request("ping")

    def active(self, safe: bool | None = None) -> ByNode | None:
        """``{node: [task info, ...]}``: the tasks running now."""
        return self.request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> ByNode | None:
        """``{node: [task info, ...]}``: received, waiting for a pool slot."""
        return self.request("reserved")

    def scheduled(self, safe: bool | None = None) -> ByNode | None:
        """``{node: [{"eta", "priority", "request": task info}, ...]}``: waiting for an ETA."""
        return self.request("scheduled")

    def registered(self, *taskinfoitems: str) -> ByNode | None:
        """``{node: [task name, ...]}``; with attribute names, ``"name [attr=value ...]"``."""
        return self.request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> ByNode | None:
        """``{node: {"total", "pid", "clock", "uptime", "pool", "broker", "rusage", ...}}``."""
        return self.request("stats")

    def revoked(self) -> ByNode | None:
        """``{node: [task id, ...]}``: the ids each worker holds as revoked."""
        return self.request("revoked")

    def active_queues(self) -> ByNode | None:
        """``{node: [queue as a dict, ...]}``: the queues each worker consumes."""
        return self.request("active_queues")

    def query_task(self, *ids: str | Sequence[str]) -> ByNode | None:
        """``{node: {task id: [state, task info]}}`` for the ids a worker still holds."""
        # Celery's older form passed one list: query_task([id1, id2]).
        flat = list(ids[0]) if len(ids) == 1 and isinstance(ids[0], list | tuple) else list(ids)
        return self.request("query_task", ids=flat)

    def conf(self, with_defaults: bool = False) -> ByNode | None:
        """``{node: {setting: value}}``: each worker's configuration."""
        return self.request("conf", with_defaults=with_defaults)

    def report(self) -> ByNode | None:
        """``{node: {"ok": text}}``: what a bug report needs to know about each worker."""
        return self.request("report")

    def clock(self) -> ByNode | None:
        """``{node: {"clock": int}}``: each worker's logical clock."""
        return self.request("clock")


__all__ = ["Control", "DuplicateNodenameWarning", "Inspect", "flatten_reply", "make_mailbox"]
