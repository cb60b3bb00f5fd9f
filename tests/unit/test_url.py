"""No credential survives mask_url or scrub, in any form kombu and redis-py accept."""

from __future__ import annotations

import logging
import sys

import pytest

from taskq.log import MaskingFormatter
from taskq.url import credentials_in_userinfo, mask_url, scrub

SECRETS = ("s3cr3t", "0ther", "p@ss")

CASES = [
    ("redis://:s3cr3t@h1:6379/0", "redis://:**@h1:6379/0"),
    ("redis://user:s3cr3t@h1/0", "redis://user:**@h1/0"),
    ("redis://:s3cr3t@h1/0;redis://:0ther@h2/0", "redis://:**@h1/0;redis://:**@h2/0"),
    ("redis://h/0?password=s3cr3t", "redis://h/0"),
    ("redis://h/0?db=1&password=s3cr3t&socket_timeout=5", "redis://h/0"),
    ("rediss://:s3cr3t@h/0?ssl_cert_reqs=none", "rediss://:**@h/0"),
    ("unix://:s3cr3t@/var/run/redis.sock?db=0", "unix://:**@/var/run/redis.sock"),
    ("amqp://guest:s3cr3t@rabbit:5672//", "amqp://guest:**@rabbit:5672//"),
    ("amqp://u:s3cr3t@h1//;amqp://u:0ther@h2//", "amqp://u:**@h1//;amqp://u:**@h2//"),
    ("redis://:p@ss@h/0", "redis://:**@h/0"),  # an '@' in the password, not encoded
    ("redis://u:p%40ss@h/0", "redis://u:**@h/0"),
    ("redis://u:s3cr3t@h:notaport/0", "redis://**@h:notaport"),  # kombu cannot parse it
    ("sentinel://:s3cr3t@h1:26379;sentinel://:0ther@h2:26379", None),
    (
        "sentinel://:s3cr3t@h1:26379/1;sentinel://:s3cr3t@h2:26380/1",
        "sentinel://:**@h1:26379/1;sentinel://:**@h2:26380/1",
    ),
    ("sentinel://u:s3cr3t@h1;sentinel://h2", None),
    ("sentinel://h1:26379/0?password=s3cr3t;sentinel://h2:26379/0", None),
]


@pytest.mark.parametrize(("url", "expected"), CASES)
def test_every_credential_form_is_masked(url: str, expected: str | None) -> None:
    masked = mask_url(url)
    assert not any(secret in masked for secret in SECRETS), masked
    if expected is not None:
        assert masked == expected


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "memory://", "sqlite:////var/lib/taskq/broker.db"]
)
def test_a_url_without_credentials_is_shown_as_given(url: str) -> None:
    assert mask_url(url) == url


def test_urls_inside_text_are_masked_and_the_rest_kept() -> None:
    text = "Error 111 connecting to redis://:s3cr3t@h/0 (also 'amqp://u:0ther@h//'). Retry."
    assert scrub(text) == "Error 111 connecting to redis://:**@h/0 (also 'amqp://u:**@h//'). Retry."
    assert scrub("nothing to hide") == "nothing to hide"


def test_log_lines_and_their_tracebacks_are_masked() -> None:
    formatter = MaskingFormatter("%(message)s")
    try:
        raise ConnectionError("cannot reach redis://:s3cr3t@h/0")
    except ConnectionError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "lost %s", ("amqp://u:0ther@h//",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "lost amqp://u:**@h//" in line and "redis://:**@h/0" in line
    assert not any(secret in line for secret in SECRETS)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1/0?password=s3cr3t", "redis://:s3cr3t@h:1/0"),
        ("redis://h/0?password=p%40ss&db=1&username=bob", "redis://bob:p%40ss@h/0?db=1"),
        ("redis://h/0?password=a;redis://h2/0?password=b", "redis://:a@h/0;redis://:b@h2/0"),
        ("redis://:s3cr3t@h/0?db=1", "redis://:s3cr3t@h/0?db=1"),
        ("amqp://u:p@h//", "amqp://u:p@h//"),
    ],
)
def test_query_credentials_move_to_the_user_part_where_kombu_reads_them(
    url: str, expected: str
) -> None:
    assert credentials_in_userinfo(url) == expected


def test_credentials_given_twice_are_refused() -> None:
    with pytest.raises(ValueError, match="both before the host and in its query"):
        credentials_in_userinfo("redis://:a@h/0?password=b")
