"""The buffered AMQP frame reader: whole frames out of whatever pieces the socket gives.

The peer here is the other end of a socket pair writing AMQP frame bytes: what is under
test is the byte parsing, which RabbitMQ cannot be made to split at a chosen byte.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from amqp.exceptions import UnexpectedFrame

from taskq.transports.amqp import BufferedTCPTransport


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


@pytest.fixture
def pair() -> Iterator[tuple[BufferedTCPTransport, socket.socket]]:
    ours, peer = socket.socketpair()
    transport = BufferedTCPTransport("127.0.0.1:1")
    transport.sock = ours
    transport._setup_transport()
    transport.connected = True
    yield transport, peer
    ours.close()
    peer.close()


FRAMES = [
    (1, 1, b"method"),
    (2, 1, b"h" * 300),
    (3, 1, b""),
    (3, 7, bytes(range(256)) * 700),  # bigger than one read
    (8, 0, b""),
]


@pytest.mark.parametrize("piece", [1, 5, 4096, 10**6])
def test_frames_come_out_whole_however_the_bytes_arrive(
    pair: tuple[BufferedTCPTransport, socket.socket], piece: int
) -> None:
    transport, peer = pair
    data = b"".join(frame(*f) for f in FRAMES)

    def send() -> None:
        for start in range(0, len(data), piece):
            peer.sendall(data[start : start + piece])

    sender = threading.Thread(target=send)
    sender.start()
    got = [transport.read_frame() for _ in FRAMES]
    sender.join()
    assert got == FRAMES
    assert transport.buffered() == 0


def test_a_read_that_times_out_mid_frame_loses_nothing(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    first, second = frame(1, 1, b"a" * 40), frame(3, 2, b"b" * 40)
    peer.sendall(first + second[:20])
    with transport.having_timeout(0.1):
        assert transport.read_frame() == (1, 1, b"a" * 40)
    with pytest.raises(socket.timeout), transport.having_timeout(0.1):
        transport.read_frame()
    assert transport.buffered() == 20
    peer.sendall(second[20:])
    with transport.having_timeout(1.0):
        assert transport.read_frame() == (3, 2, b"b" * 40)
    assert transport.connected


def test_a_buffered_frame_is_read_without_touching_the_socket_timeout(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    peer.sendall(frame(1, 1, b"x") + frame(1, 1, b"y"))
    with transport.having_timeout(1.0) as sock:
        assert sock.gettimeout() == 1.0  # nothing buffered yet: the timeout applies
        transport.read_frame()
    assert transport.sock.gettimeout() is None
    with transport.having_timeout(1.0) as sock:
        assert sock.gettimeout() is None  # the second frame came with the first read
        assert transport.read_frame() == (1, 1, b"y")


def test_a_bad_frame_end_is_an_error(pair: tuple[BufferedTCPTransport, socket.socket]) -> None:
    transport, peer = pair
    peer.sendall(frame(1, 1, b"x", end=0x00))
    with pytest.raises(UnexpectedFrame, match="frame_end 0x00"):
        transport.read_frame()


def test_a_closed_connection_is_an_error_that_marks_the_transport_down(
    pair: tuple[BufferedTCPTransport, socket.socket],
) -> None:
    transport, peer = pair
    peer.sendall(frame(1, 1, b"abc")[:5])
    peer.close()
    with pytest.raises(OSError, match="closed connection"):
        transport.read_frame()
    assert not transport.connected
