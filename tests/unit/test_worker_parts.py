"""Small worker-side pieces: node names and rate limits."""

from __future__ import annotations

import socket

import pytest

from taskq import ConfigurationError
from taskq.worker.strategy import parse_rate
from taskq.worker.worker import node_name


def test_node_names_follow_celery_conventions() -> None:
    host = socket.gethostname()
    assert node_name(None) == f"taskq@{host}"
    assert node_name("w1") == f"w1@{host}"
    assert node_name("w1@%h") == f"w1@{host}"
    assert node_name("w1@box") == "w1@box"


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [
        ("10/s", 10.0),
        ("120/m", 2.0),
        ("36/h", 0.01),
        ("5", 5.0),
        (7, 7.0),
        (None, None),
        ("0", None),
    ],
)
def test_rate_limits_parse(rate: object, per_second: float | None) -> None:
    assert parse_rate(rate) == per_second  # type: ignore[arg-type]


def test_bad_rate_limit_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="10/s"):
        parse_rate("ten per second")
