"""A loopback TCP proxy between clients and a server, which a test can partition or cut.

``blackhole()`` is a silent partition, as a proxy or a firewall that stops forwarding
without closing anything: connections stay open, bytes sent either way wait unanswered
(in the kernel's buffers, as TCP keeps unacknowledged data for retransmission), and new
connections are held in the listen queue unanswered. ``heal()`` forwards again: what was
sent during the partition arrives then, as TCP's retransmissions would deliver it, and
held connections are served. ``cut()`` resets every connection at once (RST).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._black = False  # wanted, set by the test's thread
        self._paused = False  # applied, by the proxy's thread
        self._to_reset: list[socket.socket] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)
        self.connections_made = 0

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> Proxy:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    def blackhole(self) -> None:
        with self._lock:
            self._black = True
        self._poke()

    def heal(self) -> None:
        with self._lock:
            self._black = False
        self._poke()

    def cut(self) -> None:
        """Reset every open connection, as a server or a NAT that drops them does."""
        with self._lock:
            self._to_reset.extend(self._peer)
        self._poke()

    def close(self) -> None:
        self._stop.set()
        self._poke()
        self._thread.join(10)
        for sock in [*self._peer, self._listener, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    # -- the proxy's own thread
    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    self._apply()
                elif key.data == "accept":
                    self._accept()
                elif key.fileobj in self._peer:
                    self._forward(key.fileobj)  # type: ignore[arg-type]

    def _apply(self) -> None:
        with self._lock:
            black, resets, self._to_reset = self._black, self._to_reset, []
        for sock in resets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._drop(sock)
        if black == self._paused:
            return
        self._paused = black
        # Paused: nothing is read, so nothing moves and nothing is refused either.
        for sock in [self._listener, *self._peer]:
            with contextlib.suppress(KeyError, ValueError):
                if black:
                    self._selector.unregister(sock)
                else:
                    data = "accept" if sock is self._listener else "data"
                    self._selector.register(sock, selectors.EVENT_READ, data)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                client, _ = self._listener.accept()
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                for sock in (client, server):
                    sock.setblocking(True)
                    sock.settimeout(5)
                self._peer[client], self._peer[server] = server, client
                self._selector.register(client, selectors.EVENT_READ, "data")
                self._selector.register(server, selectors.EVENT_READ, "data")
                self.connections_made += 1

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        try:
            self._peer[sock].sendall(data)
        except (OSError, KeyError):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        for s in (sock, self._peer.pop(sock, None)):
            if s is None:
                continue
            self._peer.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):
                s.close()
