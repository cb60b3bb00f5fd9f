"""What a broker spends, read from outside it: CPU from /proc, Redis's counters, rabbitmqctl.

``python -m benchmarks.scaling`` takes a snapshot before and after each measuring window
and reports the difference. Nothing here talks to the broker inside a window except the
two Redis ``INFO`` calls that bound it, so the figures are the workers' (and the
publisher's) and not the probe's. ``rabbitmqctl`` boots an Erlang VM of its own for a few
seconds: it is only run outside the windows.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.helpers import descendants  # plain Python, no pytest
from tests.servers import RabbitServer

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (all their threads), in seconds; a vanished pid counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle since boot, all cores together."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


# -- Redis
@dataclass(frozen=True)
class RedisSnapshot:
    at: float
    cpu: float  # seconds, redis-server and its threads
    commands: dict[str, tuple[int, int]]  # name -> (calls, usec), from INFO commandstats
    total_commands: int
    net_in: int
    net_out: int
    clients: int
    used_memory: int


def redis_snapshot(client: Any, pid: int) -> RedisSnapshot:
    info = client.info("all")
    commands = {
        key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for key, value in info.items()
        if key.startswith("cmdstat_")
    }
    return RedisSnapshot(
        at=time.monotonic(),
        cpu=cpu_seconds([pid]),
        commands=commands,
        total_commands=int(info["total_commands_processed"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
        clients=int(info["connected_clients"]),
        used_memory=int(info["used_memory"]),
    )


def redis_delta(a: RedisSnapshot, b: RedisSnapshot) -> dict[str, Any]:
    """Rates over the window between two snapshots; the INFO calls themselves left out."""
    seconds = b.at - a.at
    per_command: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in b.commands.items():
        calls0, usec0 = a.commands.get(name, (0, 0))
        if name == "info":
            calls -= 1  # the snapshot that ends the window
        if calls > calls0:
            per_command[name] = {
                "per_s": (calls - calls0) / seconds,
                "usec_per_s": (usec - usec0) / seconds,
            }
    return {
        "seconds": seconds,
        "cpu_pct": 100 * (b.cpu - a.cpu) / seconds,
        "commands_per_s": (b.total_commands - a.total_commands - 1) / seconds,
        "net_in_kb_s": (b.net_in - a.net_in) / seconds / 1024,
        "net_out_kb_s": (b.net_out - a.net_out) / seconds / 1024,
        "clients": b.clients,
        "used_memory_mb": b.used_memory / 2**20,
        "per_command": dict(sorted(per_command.items(), key=lambda kv: -kv[1]["per_s"])),
    }


# -- RabbitMQ
@dataclass
class Rabbit:
    """The private RabbitMQ's VM (its process tree) and its ``rabbitmqctl``."""

    server: RabbitServer
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = self.server.env()
        self.ctl = str(Path(self.server.server_script).with_name("rabbitmqctl"))

    def pids(self) -> list[int]:
        """The broker's processes: the VM (beam.smp) and its helpers."""
        return list(descendants(self.server.pid or 0))

    def rows(self, *args: str) -> list[list[str]]:
        argv = [self.ctl, "-n", self.server.nodename, "-q", *args, "--no-table-headers"]
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=120, check=True
        )
        return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]

    def counts(self) -> dict[str, int]:
        """Connections, channels, queues and consumers the broker holds now."""
        connections = self.rows("list_connections", "recv_cnt", "send_cnt", "channels")
        return {
            "connections": len(connections),
            "channels": len(self.rows("list_channels", "number")),
            "queues": len(self.rows("list_queues", "name")),
            "consumers": len(self.rows("list_consumers", "queue_name")),
        }

    def socket_counts(self) -> dict[str, tuple[int, int]]:
        """Per connection (by name): socket reads and writes the broker made so far.

        RabbitMQ's ``recv_cnt``/``send_cnt`` count socket operations, not AMQP frames (a
        read may carry several frames). Compare two readings with ``socket_rates``: only
        the connections open at both count, so one that closed meanwhile (the harness's
        ping) cannot make a rate negative.
        """
        rows = self.rows("list_connections", "name", "recv_cnt", "send_cnt")
        return {r[0]: (int(r[1]), int(r[2])) for r in rows if len(r) == 3}


def socket_rates(
    a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], seconds: float
) -> tuple[float, float]:
    """Reads and writes a second between two ``Rabbit.socket_counts`` readings."""
    both = a.keys() & b.keys()
    reads = sum(b[name][0] - a[name][0] for name in both)
    writes = sum(b[name][1] - a[name][1] for name in both)
    return reads / seconds, writes / seconds
