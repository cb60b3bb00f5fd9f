"""The bytes of a stored result: Celery's ``result_serializer`` and ``result_accept_content``.

Celery stores the meta document (and a chord member's entry, and a saved group) as the bare
output of its result serializer, with no mark of which one wrote it, and decodes with the
content type of its own ``result_serializer``, refusing it unless ``result_accept_content``
(or, when that is None, ``accept_content``) names it. taskq writes the same bytes. It reads
with its configured serializer first too; a value that fails there is recognised by its
first bytes (JSON text, a pickle's protocol mark, a msgpack map or array) and decoded in
that format if the accept list names it, so a fleet that moves from one serializer to
another still reads what was stored before. Anything else is refused with a SecurityError.

Pickle runs code of the writer's choosing in the reader, so it is written only when the
accept list names it as well as ``result_serializer``, the rule task messages follow
(serializers.py). With pickle, an exception is stored as the object itself, as Celery
does; one that does not survive a round trip, and taskq's own errors that Celery knows
under ``celery.exceptions``, are stored as Celery's exception dict, which Celery reads
under pickle too.
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
from collections.abc import Callable, Iterable
from typing import Any

from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

from ..exceptions import ConfigurationError, SecurityError
from ..serializers import check_available, serializer_name
from .errors import SHARED_ERRORS, SHARED_MODULES, decode_exception, encode_exception

PICKLE_PROTOCOL = 4  # kombu's default (its PICKLE_PROTOCOL environment variable aside)

Raw = bytes | bytearray | memoryview | str


class ResultCodec:
    """Encodes in ``serializer``; decodes what ``accept`` names (Celery's setting values).

    Chosen once per backend: ``encode``, ``decode`` and ``encode_exception`` are the chosen
    format's functions, so the JSON path does no more per store than before.
    """

    def __init__(self, serializer: str = "json", accept: Iterable[str] | None = None):
        self.name = serializer_name(serializer)
        accepted = frozenset(serializer_name(a) for a in (accept or ("json",)))
        if self.name == "pickle" and "pickle" not in accepted:
            raise ConfigurationError(_not_accepted_message(self.name, accepted))
        # What it writes it reads, when that cannot run code: a worker that takes only
        # msgpack messages still stores and joins JSON results (Celery would store them and
        # then fail every read of them).
        self.accepted = accepted | {self.name}
        for name in self.accepted:
            check_available(name)
        self.encode: Callable[[Any], bytes | str] = _ENCODERS[self.name]()
        self._loads = self._decoder(self.name)
        exception_encoders: dict[str, Callable[[BaseException], Any]] = {
            "json": encode_exception,
            "msgpack": functools.partial(encode_exception, dumps=self.encode),
            "pickle": _pickled_exception,
        }
        self.encode_exception = exception_encoders[self.name]

    def decode(self, raw: Raw) -> Any:
        """The value stored as ``raw``; SecurityError for a format not accepted."""
        try:
            return self._loads(raw)
        except Exception as exc:
            found = sniff(raw)
            if found is None or found == self.name:
                raise ValueError(f"not valid {self.name}: {exc}") from exc
            if found not in self.accepted:
                raise SecurityError(
                    f"A stored result is in {found}, which result_accept_content (or "
                    f"accept_content) does not name ({', '.join(sorted(self.accepted))}); "
                    "refusing to decode it"
                ) from None
            return self._decoder(found)(raw)

    def status(self, raw: Raw) -> str | None:
        """The ``status`` of a stored meta document; None if it cannot be read here."""
        try:
            meta = self.decode(raw)
        except Exception:
            return None
        status = meta.get("status") if isinstance(meta, dict) else None
        return status if isinstance(status, str) else None

    @staticmethod
    def _decoder(name: str) -> Callable[[Raw], Any]:
        if name == "json":
            return json_loads  # type: ignore[no-any-return]
        if name == "msgpack":
            return _msgpack_loads()
        return _pickle_loads


def sniff(raw: Raw) -> str | None:
    """Which serializer wrote ``raw``, by its first bytes; None if none of the three."""
    if isinstance(raw, str):
        return "json"
    data = bytes(raw[:2])
    if not data:
        return None
    first = data[0]
    if data[:1] in (b"{", b"[", b'"') or data[:1].isspace():
        return "json"
    if first == 0x80 and len(data) == 2 and 2 <= data[1] <= 5:
        return "pickle"  # PROTO and its version: what every pickle since protocol 2 starts with
    if 0x80 <= first <= 0x9F or first in (0xDC, 0xDD, 0xDE, 0xDF):
        return "msgpack"  # a map or an array, as a meta document or a chord entry is
    return None


def _not_accepted_message(name: str, accepted: frozenset[str]) -> str:
    return (
        "Storing results in pickle needs result_accept_content (or accept_content, when "
        "result_accept_content is unset) to name 'pickle' as well: a pickled result runs "
        "code of its writer's choosing in the process that reads it, so taskq turns it on "
        f"only when both settings say so (they name {', '.join(sorted(accepted))})."
    )


def _json_encoder() -> Callable[[Any], bytes | str]:
    return json_dumps  # type: ignore[no-any-return]


def _msgpack_encoder() -> Callable[[Any], bytes | str]:
    msgpack = importlib.import_module("msgpack")

    def packb(value: Any) -> bytes:
        # kombu's options, so Celery reads the same bytes: str as str, bytes as bin.
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    return packb


def _msgpack_loads() -> Callable[[Raw], Any]:
    msgpack = importlib.import_module("msgpack")

    def unpackb(raw: Raw) -> Any:
        return msgpack.unpackb(raw, raw=False)

    return unpackb


def _pickle_encoder() -> Callable[[Any], bytes | str]:
    def dumps(value: Any) -> bytes:
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)

    return dumps


_ENCODERS: dict[str, Callable[[], Callable[[Any], bytes | str]]] = {
    "json": _json_encoder,
    "msgpack": _msgpack_encoder,
    "pickle": _pickle_encoder,
}


def _pickled_exception(exc: BaseException) -> Any:
    """The exception itself, as Celery stores it under pickle, where that is safe to do."""
    if type(exc).__name__ in SHARED_ERRORS and type(exc).__module__ == "taskq.exceptions":
        return encode_exception(exc)  # a Celery reader rebuilds its own class from the dict
    try:
        pickle.loads(pickle.dumps(exc, protocol=PICKLE_PROTOCOL))
    except Exception:
        return encode_exception(exc)
    return exc


# Celery's wrapper for an exception that would not pickle; rebuilt here as the exception
# it stands for, so reading one does not need Celery installed.
WRAPPER = ("celery.utils.serialization", "UnpickleableExceptionWrapper")


class _ResultUnpickler(pickle.Unpickler):
    """Pickle as written, except Celery's shared errors, which become taskq's classes."""

    def find_class(self, module: str, name: str) -> Any:
        if module in SHARED_MODULES and name in SHARED_ERRORS:
            return SHARED_ERRORS[name]
        if (module, name) == WRAPPER:
            return _unwrap
        return super().find_class(module, name)


def _unwrap(module: str, name: str, args: Any, text: str | None = None) -> BaseException:
    return decode_exception({"exc_type": name, "exc_module": module, "exc_message": args}, text)


def _pickle_loads(raw: Raw) -> Any:
    data = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)
    return _ResultUnpickler(io.BytesIO(data)).load()


__all__ = ["ResultCodec", "sniff"]
