"""The app's two clients, built from its settings: the publisher (amqp.py) and the backend.

Each is made on first use (``Taskq.amqp``, ``Taskq.backend``) and again after a fork or a
``close()``; only the settings at that moment count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .amqp import Amqp, PublishDefaults, Router
from .backends import Backend, BrokerLink, ResultCodec, RetryPolicy, backend_from_url
from .broker import broker_connection
from .queues import default_queue
from .serializers import result_accept, serializer_name

if TYPE_CHECKING:
    from .app import Taskq


def make_amqp(app: Taskq) -> Amqp:
    """The publisher: connection and producer pools, router, the defaults of every send."""
    c = app.conf
    url = app.broker_url

    def connect() -> Any:
        return broker_connection(
            url, c.broker_transport_options, c.broker_heartbeat, c.broker_connection_timeout
        )

    declared = app.declared_queues()
    router = Router(
        c.task_routes,
        default_queue(c, declared),
        c.task_create_missing_queues,
        declared,
        c.task_default_queue_type,
    )
    defaults = PublishDefaults(
        serializer=serializer_name(c.task_serializer),
        accept=tuple(c.accept_content),
        compression=c.task_compression,
        delivery_mode=c.task_default_delivery_mode,
        priority=c.task_default_priority,
        retry=c.task_publish_retry,
        retry_policy=c.task_publish_retry_policy,
        max_message_size=c.task_max_message_size,
        sign=app.security.signer.dumps if app.security is not None else None,
    )
    return Amqp(url, connect, router, defaults, c.broker_pool_limit)


def make_backend(app: Taskq) -> Backend:
    """The result backend ``result_backend`` names (or the embedded default's)."""
    c = app.conf
    return backend_from_url(
        app.backend_url,
        expires=c.result_expires,
        extended=c.result_extended,
        options=c.result_backend_transport_options,
        retry=RetryPolicy.from_conf(c),
        codec=ResultCodec(c.result_serializer, result_accept(c)),
        link=BrokerLink(
            app.connection, lambda: app.amqp.producers, lambda: app.oid, c.result_persistent
        ),
    )


__all__ = ["make_amqp", "make_backend"]
