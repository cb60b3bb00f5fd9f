"""Commands sent straight on a redis-py connection, past the client's command layer.

A redis-py client wraps every command in a lock, a retry policy and reply callbacks, and a
pooled one also takes a connection from its pool and checks it for unread data: together
more than the round trip itself on loopback. The hot paths (a publish, an ack, a stored
result) send on a connection they own instead. The connection still connects on first
use, checks its health and drops itself on an error; callers decide what a failure means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


def call(connection: Any, *args: Any) -> Any:
    """One command and its reply; an error reply is raised."""
    connection.send_command(*args)
    return connection.read_response()


def run_script(connection: Any, text: str, sha: str, args: Sequence[Any]) -> Any:
    """``EVALSHA sha *args``; loads the script first if the server lost it (a restart)."""
    try:
        return call(connection, "EVALSHA", sha, *args)
    except NoScriptError:
        call(connection, "SCRIPT", "LOAD", text)
        return call(connection, "EVALSHA", sha, *args)
