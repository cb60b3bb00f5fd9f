"""kombu's py-amqp transport with a wake-up pipe, for the worker's consumer thread.

py-amqp reads frames from a blocking socket, so a worker that waits for RabbitMQ could
only notice its own finished tasks by polling with a short timeout. Here ``drain_events``
first waits, with ``poll``, for either the socket or a ``Waker``; only when the socket
has data does py-amqp read it. Everything else is kombu's.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from kombu.transport import pyamqp

from .wakeup import Waker


class Transport(pyamqp.Transport):
    """For ``amqp://`` and ``pyamqp://``; ``amqps://`` keeps kombu's TLS transport."""

    waker: Waker | None = None

    def enable_wakeup(self) -> Callable[[], None]:
        """A thread-safe function that makes a waiting ``drain_events`` return at once."""
        if self.waker is None:
            self.waker = Waker()
        return self.waker.wake

    def drain_events(self, connection: Any, **kwargs: Any) -> Any:
        waker = self.waker
        transport = getattr(connection, "transport", None)
        sock = getattr(transport, "sock", None)
        # Without a socket, py-amqp raises the right connection error itself.
        if waker is not None and sock is not None and not _buffered(transport):
            timeout = kwargs.get("timeout")
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            poller.register(waker.fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
            if waker.fd in ready:
                waker.woken()
            if sock.fileno() not in ready:
                raise TimeoutError()
        return super().drain_events(connection, **kwargs)

    def close_connection(self, connection: Any) -> None:
        if self.waker is not None:
            self.waker.close()
        super().close_connection(connection)


def _buffered(transport: Any) -> bool:
    # Bytes py-amqp (or TLS) has read off the socket but not parsed: select would not see
    # them, so read at once.
    if getattr(transport, "_read_buffer", b""):
        return True
    pending = getattr(transport.sock, "pending", None)
    return bool(pending and pending())
