"""Inflating a compressed message body, a piece at a time, never past a size limit.

kombu would inflate a whole body in one call: 300 KB of gzip that grows to 300 MB cost
the worker 1.5 GB before anything could look at its size. Here the decompressor is asked
for at most one byte more than the limit, so a body too big once inflated is known after
``limit`` bytes of output, and refused. The formats are those kombu writes for Celery's
``task_compression`` (zlib under the gzip type, bzip2, lzma); real gzip is read as well.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from .exceptions import MalformedMessage

# Content types kombu puts in the ``compression`` header, and its aliases for them.
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "application/x-gzip": lambda: zlib.decompressobj(wbits=47),  # zlib or gzip, either
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}
_ALIASES = {
    "gzip": "application/x-gzip",
    "zlib": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
}


def inflate(data: bytes, compression: str, limit: int | None) -> bytes:
    """``data`` decompressed, or ``MalformedMessage`` if it is over ``limit`` or unreadable."""
    kind = _ALIASES.get(compression, compression)
    make = _DECOMPRESSORS.get(kind)
    if make is None:
        known = ", ".join(sorted(_DECOMPRESSORS))
        raise MalformedMessage(f"body compression {compression!r} is not supported ({known})")
    decompressor = make()
    try:
        if limit is None:
            out = decompressor.decompress(data)
        else:  # one byte more than allowed says "too big" without inflating the rest
            out = decompressor.decompress(data, limit + 1)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise MalformedMessage(f"body could not be decompressed ({compression}): {exc}") from None
    if limit is not None and len(out) > limit:
        raise MalformedMessage(
            f"body inflates to more than task_max_message_size ({limit} bytes) from "
            f"{len(data)} compressed bytes: refused before inflating it further"
        )
    if not decompressor.eof:
        raise MalformedMessage(f"body could not be decompressed ({compression}): it is truncated")
    return bytes(out)
