"""ReplyWait: the bounded spin before a thread sleeps for a Redis reply, on real sockets."""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from taskq.redis_direct import LONGEST_REST, MISSES_BEFORE_REST, ReplyWait

SHORT = 0.0005  # a spin that outlasts this finds no reply: nothing is ever sent in time


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, server = socket.socketpair()
    yield ours, server
    ours.close()
    server.close()


def _connection(sock: socket.socket) -> SimpleNamespace:
    # What ReplyWait reads of a redis-py connection: its socket, as redis-py names it.
    return SimpleNamespace(_sock=sock)


def _one_miss_from_rest(wait: ReplyWait, connection: SimpleNamespace) -> None:
    for _ in range(MISSES_BEFORE_REST - 1):
        wait(connection)
    assert wait.spinning


def test_a_readable_reply_is_a_hit(pair) -> None:
    ours, server = pair
    wait = ReplyWait(limit=SHORT)
    connection = _connection(ours)
    _one_miss_from_rest(wait, connection)
    server.sendall(b":1\r\n")
    wait(connection)
    assert wait.spinning  # a miss would have started a rest


def test_spins_that_keep_missing_rest_for_longer_each_time(pair) -> None:
    ours, _ = pair
    wait = ReplyWait(limit=SHORT)
    connection = _connection(ours)
    for _ in range(MISSES_BEFORE_REST):
        assert wait.spinning
        wait(connection)
    rests = []
    for _ in range(5):
        rest = 0
        while not wait.spinning:
            wait(connection)
            rest += 1
        rests.append(rest)
        wait(connection)  # one more miss after a rest is enough to rest again
    assert rests == [1, 2, 4, 8, 16]


def test_a_reply_in_time_ends_the_rests(pair) -> None:
    ours, server = pair
    wait = ReplyWait(limit=SHORT)
    connection = _connection(ours)
    for _ in range(MISSES_BEFORE_REST + 1 + 1 + 2):  # three misses, rest 1, miss, rest 2
        wait(connection)
    assert wait.spinning
    server.sendall(b":1\r\n")
    wait(connection)  # a hit: the next miss starts the count from the beginning
    ours.recv(16)
    for _ in range(MISSES_BEFORE_REST - 1):
        wait(connection)
        assert wait.spinning
    wait(connection)
    assert not wait.spinning
    wait(connection)
    assert wait.spinning  # a rest of 1 again, not the 4 the misses before would give


def test_the_rest_stops_growing(pair) -> None:
    ours, _ = pair
    wait = ReplyWait(limit=0.000001)
    connection = _connection(ours)
    rests: list[int] = []
    rest = 0
    for _ in range(MISSES_BEFORE_REST + 4 * LONGEST_REST):
        if wait.spinning:
            if rest:
                rests.append(rest)
            rest = 0
        else:
            rest += 1
        wait(connection)
    doublings = LONGEST_REST.bit_length()  # 1, 2, 4, ... LONGEST_REST
    assert rests[:doublings] == [2**i for i in range(doublings)]
    assert set(rests[doublings:]) == {LONGEST_REST}


def test_a_new_socket_is_watched_in_place_of_the_old(pair) -> None:
    old, _ = pair
    wait = ReplyWait(limit=SHORT)
    connection = _connection(old)
    _one_miss_from_rest(wait, connection)
    new, server = socket.socketpair()
    try:
        connection._sock = new  # redis-py reconnected
        server.sendall(b":1\r\n")
        wait(connection)
        assert wait.spinning  # a hit: it polls the new socket, not the old one
    finally:
        new.close()
        server.close()


def test_no_spin_where_poll_is_gone(pair, monkeypatch) -> None:
    ours, _ = pair
    monkeypatch.delattr("select.poll")  # as gevent's and eventlet's patching leave it
    wait = ReplyWait(limit=10.0)
    for _ in range(MISSES_BEFORE_REST + 1):
        wait(_connection(ours))  # returns at once, and counts no miss
    assert wait.spinning


def test_no_spin_on_tls_or_when_turned_off(pair, monkeypatch) -> None:
    ours, _ = pair

    def no_poller() -> None:
        raise AssertionError("a poller was made: the wait would have polled")

    monkeypatch.setattr(select, "poll", no_poller)
    context = ssl.create_default_context()
    context.check_hostname = False
    plain, other = socket.socketpair()
    tls = context.wrap_socket(plain, do_handshake_on_connect=False)
    try:
        for wait, connection in (
            (ReplyWait(limit=10.0), _connection(tls)),  # a TLS record may be read already
            (ReplyWait(limit=0.0), _connection(ours)),
        ):
            for _ in range(MISSES_BEFORE_REST + 1):
                wait(connection)  # returns at once, and counts no miss
            assert wait.spinning == (wait.limit > 0)
    finally:
        tls.close()
        other.close()
