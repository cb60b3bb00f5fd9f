"""Result backends behind one small interface, chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError, NoBackendConfigured
from .base import Backend, ResultContext, decode_exception, encode_exception
from .codec import ResultCodec
from .retry import RetryPolicy
from .rpc import BrokerLink, RpcBackend


class DisabledBackend(Backend):
    """Results are off: tasks still run, but there is nothing to read or wait for."""

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        context: ResultContext | None = None,
    ) -> None:
        return None

    def _refuse(self) -> NoBackendConfigured:
        return NoBackendConfigured(
            "No result backend is configured, so task results are not stored. Set one, e.g. "
            "Taskq('proj', backend='redis://localhost:6379/1') or conf.result_backend."
        )

    def _get(self, key: str) -> None:
        raise self._refuse()

    def _set(self, key: str, value: bytes | str, state: str) -> None:
        return None

    def _delete(self, key: str) -> None:
        raise self._refuse()


def backend_from_url(
    url: str | None,
    expires: float | None = 86400.0,
    extended: bool = False,
    options: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    codec: ResultCodec | None = None,
    link: BrokerLink | None = None,
) -> Backend:
    """The backend for ``url``: ``codec`` is the result serializer (default JSON), ``link``
    the app's broker, for ``rpc://``."""
    if not url or url in ("disabled", "none"):
        return DisabledBackend(expires, extended)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix", "sentinel"):
        try:
            from .redis import RedisBackend
        except ImportError as exc:
            raise ConfigurationError(
                f"A {scheme}:// result backend needs redis-py ({exc}): pip install 'taskq[redis]'"
            ) from exc

        return RedisBackend(url, expires, extended, options, retry, codec)
    if scheme == "sqlite":
        from .sqlite import SqliteBackend

        # SQLAlchemy's convention, as for the broker: sqlite:////abs/path, sqlite:///relative.
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(
                "sqlite result backend URL needs a path: sqlite:////abs/path.db"
            )
        return SqliteBackend(path, expires, extended, retry, codec)
    if scheme == "rpc":
        if link is None:
            raise ConfigurationError("an rpc:// result backend needs the app's broker")
        return RpcBackend(link, expires, extended, retry, codec)
    if scheme in ("memory", "cache+memory"):  # Celery's test suites say cache+memory://
        from .memory import MemoryBackend

        return MemoryBackend(expires, extended, retry, codec)
    raise ConfigurationError(
        f"Unsupported result backend {url.split('://', 1)[0]!r}; use redis://, sentinel://, "
        "sqlite:///path, rpc://, memory:// or leave result_backend unset"
    )


__all__ = [
    "Backend",
    "BrokerLink",
    "DisabledBackend",
    "ResultCodec",
    "ResultContext",
    "RetryPolicy",
    "backend_from_url",
    "decode_exception",
    "encode_exception",
]
