"""Inflating within a limit: a bomb is refused after the limit's worth of output, not whole."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tracemalloc
import zlib

import pytest

from taskq.compression import inflate
from taskq.exceptions import MalformedMessage

TEXT = b'[[1, 2], {}, {"callbacks": null}]' * 100


@pytest.mark.parametrize(
    ("compression", "pack"),
    [
        ("application/x-gzip", zlib.compress),  # what kombu writes for 'gzip' and 'zlib'
        ("gzip", gzip.compress),  # a real gzip stream, under the alias
        ("application/x-bz2", bz2.compress),
        ("bzip2", bz2.compress),
        ("application/x-lzma", lzma.compress),
    ],
)
def test_each_format_kombu_writes_is_read(compression: str, pack: object) -> None:
    assert inflate(pack(TEXT), compression, 1 << 20) == TEXT  # type: ignore[operator]
    assert inflate(pack(TEXT), compression, None) == TEXT  # type: ignore[operator]


def test_a_bomb_is_refused_having_inflated_no_more_than_the_limit() -> None:
    limit = 1 << 20
    bomb = zlib.compress(b"\0" * (300 << 20))  # 300 MB from about 300 KB
    assert len(bomb) < 400 << 10
    tracemalloc.start()
    try:
        with pytest.raises(MalformedMessage, match="inflates to more than task_max_message_size"):
            inflate(bomb, "application/x-gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, peak  # whole, it would have been 300 MB


@pytest.mark.parametrize(
    ("body", "compression", "why"),
    [
        (b"not compressed at all", "application/x-gzip", "could not be decompressed"),
        (zlib.compress(TEXT)[:-10], "application/x-gzip", "truncated"),
        (bz2.compress(TEXT)[:20], "application/x-bz2", "truncated"),
        (TEXT, "application/x-brotli", "not supported"),
    ],
)
def test_what_cannot_be_inflated_says_why(body: bytes, compression: str, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        inflate(body, compression, 1 << 20)
