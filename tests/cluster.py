"""A RabbitMQ cluster on loopback for the fault suite: three nodes, one epmd, one cookie.

Each node is a ``RabbitServer`` (tests/servers.py) with its own name, AMQP and
distribution ports and data folder; they share one epmd (a private port) and one Erlang
cookie, and the second and third join the first with ``rabbitmqctl join_cluster``.
Plain Python, no pytest: ``with RabbitCluster() as cluster: ...``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any, Self

from tests.servers import RabbitServer, ServerError, _Proc, find_binary, free_port, tail

CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"


class ClusterNode(RabbitServer):
    """One node of a ``RabbitCluster``: the cluster runs the epmd it registers with."""

    def __init__(self, name: str, epmd_port: int, cookie: str):
        super().__init__(start_timeout=120.0)
        self.epmd_port = epmd_port
        self.nodename = f"{name}-{self.port}@localhost"
        self.cookie = cookie

    def env(self) -> dict[str, str]:
        env = super().env()
        cookie = self.dir / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        return env

    def _start_epmd(self, env: dict[str, str]) -> None:
        pass  # the cluster's

    def _stop_epmd(self) -> None:
        pass

    def tool(self, binary: str, *args: str, timeout: float = 120.0) -> str:
        """Run a RabbitMQ command-line tool against this node; its output, or raise."""
        done = subprocess.run(
            [binary, "-n", self.nodename, *args],
            env=self.env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ServerError(
                f"{os.path.basename(binary)} {' '.join(args)} on {self.nodename} failed "
                f"({done.returncode}): {done.stdout}{done.stderr}"
            )
        return done.stdout

    def ctl(self, *args: str, timeout: float = 120.0) -> str:
        return self.tool(CTL, *args, timeout=timeout)


class RabbitCluster:
    def __init__(self, size: int = 3):
        self.epmd_port = free_port()
        self.cookie = secrets.token_hex(16)
        self.nodes = [ClusterNode(f"taskq-c{i}", self.epmd_port, self.cookie) for i in range(size)]
        self._epmd: _Proc | None = None

    @property
    def url(self) -> str:
        """Every node, for kombu's failover: the client tries them in turn."""
        return ";".join(node.url for node in self.nodes)

    def start(self) -> Self:
        try:
            self._start_epmd()
            # One after the other, from this thread: a node dies with the thread that
            # started it (tests/servers.py asks for a signal when the parent goes).
            for node in self.nodes:
                node.start()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
            self.wait_clustered(120.0)
        except BaseException:
            self.close()
            raise
        return self

    def wait_clustered(self, timeout: float) -> None:
        wanted = {node.nodename for node in self.nodes}
        deadline = time.monotonic() + timeout
        while True:
            status = json.loads(self.nodes[0].ctl("cluster_status", "--formatter", "json"))
            running = set(status.get("running_nodes", []))
            if running >= wanted:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"cluster not formed: running {sorted(running)}")
            time.sleep(0.5)

    def node_named(self, nodename: str) -> ClusterNode:
        return next(node for node in self.nodes if node.nodename == nodename)

    def leader_of(self, queue: str, asking: ClusterNode | None = None) -> ClusterNode:
        """The node that holds the quorum queue's leader now."""
        ask = asking or next(node for node in self.nodes if node.running())
        rows = json.loads(ask.ctl("list_queues", "name", "leader", "--formatter", "json"))
        for row in rows:
            if row.get("name") == queue and row.get("leader"):
                return self.node_named(str(row["leader"]))
        raise ServerError(f"no leader listed for {queue!r}: {rows}")

    def _start_epmd(self) -> None:
        node = self.nodes[0]
        binary = find_binary("epmd", "/usr/bin/epmd")
        log = node.dir / "epmd.log"
        self._epmd = _Proc(
            [binary, "-port", str(self.epmd_port), "-address", "127.0.0.1"], log, node.env(),
            node.dir,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.epmd_port), timeout=1).close()
                return
            except OSError as exc:
                if not self._epmd.running() or time.monotonic() > deadline:
                    raise ServerError(f"epmd did not start: {exc!r}\n{tail(log)}") from exc
            time.sleep(0.05)

    def close(self) -> None:
        try:
            _each(self.nodes, lambda node: node.close())
        finally:
            if self._epmd is not None:
                self._epmd.stop()
                self._epmd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _each(nodes: Sequence[ClusterNode], act: Any) -> None:
    """``act`` on every node at once (a node takes seconds to stop); never to start one."""
    errors: list[BaseException] = []

    def run(node: ClusterNode) -> None:
        try:
            act(node)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
