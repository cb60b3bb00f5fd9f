"""Worker: builds the pool and the consumer from the config, runs them, handles signals.

``start`` and ``stop`` are straight-line code: no bootsteps, no dependency graph.
SIGTERM/SIGINT ask for a warm shutdown (stop taking messages, let running tasks finish,
return everything reserved to the broker, exit 0); a second one, or SIGQUIT, is cold
(kill running tasks and return their late-ack messages too). The handlers only record a
signal; the consumer's loop acts on it (signal_inbox.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kombu import Queue

from .. import signals
from ..amqp import make_queue
from ..beat import make_beat
from ..events import check_serializer
from ..exceptions import ConfigurationError
from ..queues import default_queue
from ..serializers import accepted_types, check_conf
from ..url import mask_url
from .consumer import Consumer, ConsumerOptions
from .control import ControlPanel
from .metrics import WorkerMetrics
from .monitor import HEARTBEAT_FREQ, Monitor
from .pool import Pool, PoolOptions, SoloPool, ThreadPool
from .prefork import PreforkPool
from .signal_inbox import STOP_SIGNALS, SignalInbox
from .state import WorkerState

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger(__name__)

POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}


@dataclass(frozen=True)
class WorkerOptions:
    """What the command line may override; None means "the app's setting"."""

    concurrency: int | None = None
    pool: str | None = None
    queues: tuple[str, ...] = ()
    hostname: str | None = None
    prefetch_multiplier: int | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    task_events: bool | None = None  # -E
    heartbeat: float | None = HEARTBEAT_FREQ  # seconds between worker-heartbeat events
    statedb: str | None = None
    beat: bool = False  # -B: run the scheduler in this process too
    metrics_port: int | None = None  # serve Prometheus metrics on this port (0: any free)
    metrics_address: str = "127.0.0.1"


def node_name(hostname: str | None) -> str:
    host = socket.gethostname()
    if not hostname:
        return f"taskq@{host}"
    name = hostname.replace("%h", host).replace("%n", host.split(".")[0])
    return name if "@" in name else f"{name}@{host}"


class Worker:
    def __init__(self, app: Taskq, options: WorkerOptions | None = None):
        self.app = app
        o = options or WorkerOptions()
        self.hostname = node_name(o.hostname)
        signals.celeryd_init.send(
            sender=self.hostname, instance=self, conf=app.conf, options=dataclasses.asdict(o)
        )
        # Every task is registered before the banner lists them and the first message is
        # read: the modules the settings name and those autodiscover_tasks found.
        signals.import_modules.send(sender=app)
        app.import_task_modules()
        app.finalize()
        signals.worker_init.send(sender=self)
        c = app.conf
        self.task_events = c.worker_send_task_events if o.task_events is None else o.task_events
        self.heartbeat = o.heartbeat
        check_serializer(app)
        check_conf(c)
        app.check_signing()
        self.pool_name = o.pool or c.worker_pool
        if self.pool_name not in POOLS:
            raise ConfigurationError(f"Unknown pool {self.pool_name!r}: use {', '.join(POOLS)}")
        if self.pool_name == "prefork" and app.broker_url.startswith("memory://"):
            raise ConfigurationError(
                "The memory:// broker lives in one process: use -P solo or -P threads"
            )
        concurrency = (
            1
            if self.pool_name == "solo"
            else (o.concurrency or c.worker_concurrency or os.cpu_count() or 1)
        )
        self.pool_options = PoolOptions(
            concurrency=concurrency,
            max_tasks_per_child=o.max_tasks_per_child or c.worker_max_tasks_per_child,
            max_memory_per_child=o.max_memory_per_child or c.worker_max_memory_per_child,
            lost_wait=c.worker_lost_wait,
            batch_size=c.worker_batch_size,
        )
        multiplier = o.prefetch_multiplier or c.worker_prefetch_multiplier
        self.queues = self._queues(o.queues)
        self.consumer_options = ConsumerOptions(
            queues=self.queues,
            prefetch_count=concurrency * multiplier,
            hostname=self.hostname,
            accept=accepted_types(c.accept_content),
            verifier=app.security.verifier if app.security is not None else None,
            max_message_size=c.task_max_message_size,
            prefetch_seconds=c.worker_prefetch_seconds,
        )
        self.state = WorkerState(o.statedb or c.worker_state_db)
        self.beat = make_beat(app) if o.beat else None  # -B: its schedule checked here
        self.metrics = (
            None
            if o.metrics_port is None
            else WorkerMetrics(app, self.hostname, self.queues, c.task_dead_letter_queue)
        )
        self._metrics_at = (o.metrics_address, o.metrics_port or 0)
        self.metrics_port: int | None = None  # the port bound, once serving
        self.pool: Pool | None = None
        self.consumer: Consumer | None = None
        self._inbox: SignalInbox | None = None
        self._stopping = False
        self._cold = False
        self.ready = threading.Event()  # set once connected and consuming
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)

    def _queues(self, names: tuple[str, ...]) -> tuple[Queue, ...]:
        """-Q's queues, else ``task_queues``, else the default queue; declared ones as
        declared (exchange, key, arguments)."""
        declared = self.app.declared_queues()
        default = default_queue(self.app.conf, declared)
        if not names:
            return declared or (default,)
        by_name = {q.name: q for q in (*declared, default)}
        kind = self.app.conf.task_default_queue_type
        return tuple(by_name.get(n) or make_queue(n, queue_type=kind) for n in names)

    def banner(self) -> str:
        # Celery's built-in names are on every app: the banner lists the app's own tasks.
        names = sorted(n for n in self.app.tasks if not n.startswith("celery."))
        tasks = "\n".join(f"  . {name}" for name in names) or "  (none)"
        queues = "\n".join(
            f"  . {q.name:<16} exchange={q.exchange.name or '(default)'}"
            f" routing_key={q.routing_key}"
            for q in self.queues
        )
        from .. import __version__

        results = mask_url(self.app.backend_url) if self.app.backend_url else "disabled"
        acks = "late (after the task ran)" if self.app.conf.task_acks_late else "early"
        periodic = len(self.beat.entries) if self.beat is not None else 0
        beat = "" if self.beat is None else f"- beat:        {periodic} periodic task(s) (-B)\n"
        return (
            f"taskq {__version__} ({self.hostname})\n"
            f"- app:         {self.app.main}\n"
            f"- broker:      {mask_url(self.app.broker_url)}\n"
            f"- results:     {results}\n"
            f"- concurrency: {self.pool_options.concurrency} ({self.pool_name})\n"
            f"- prefetch:    {self.consumer_options.prefetch_count}\n"
            f"- acks:        {acks}\n"
            f"- events:      {'task events on (-E)' if self.task_events else 'worker only'}\n"
            f"{beat}[queues]\n{queues}\n[tasks]\n{tasks}\n"
        )

    def start(self) -> int:
        """Run until stopped. The exit status: 0 after a warm stop, 1 after a cold one.

        A cold stop cut tasks short, so it is not a clean exit, and a supervisor should be
        able to tell (Celery's worker exits 1 too).
        """
        self.pool = POOLS[self.pool_name](self.app, self.pool_options)
        self.pool.start()
        self.state.load()
        monitor = Monitor(
            self.app, self.hostname, task_events=self.task_events, heartbeat=self.heartbeat
        )
        consumer = Consumer(self.app, self.pool, self.consumer_options, self.state, monitor)
        if self.metrics is not None:
            monitor.metrics = self.metrics
            self.metrics.live.running = lambda: len(consumer.active)
            self.metrics.live.held = lambda: len(consumer.held)
            self.metrics_port = self.metrics.serve(self._metrics_at[1], self._metrics_at[0])
        if self.app.conf.worker_enable_remote_control:
            consumer.control = ControlPanel(consumer, on_shutdown=self.stop)
        if self._inbox is not None:
            consumer.watch(self._inbox.fd, self._act_on_signals)
        consumer.on_ready = self.ready.set
        self.consumer = consumer
        self._pass_on_stop(consumer)  # a stop asked for while the pool was starting
        beat_stop = threading.Event()
        beat = self._start_beat(beat_stop)
        try:
            consumer.run()
        finally:
            beat_stop.set()
            if beat is not None:
                beat.join(30)
            if self.metrics is not None:
                self.metrics.close()
            self.state.save()
            signals.worker_shutdown.send(sender=self)
            self.app.close()
        if consumer.cold_stop:
            logger.warning("%s stopped cold: running tasks were cut short.", self.hostname)
            return 1
        logger.info("%s stopped.", self.hostname)
        return 0

    def _start_beat(self, stop: threading.Event) -> threading.Thread | None:
        """``-B``: the scheduler on a thread of this process, sharing the beats' store."""
        scheduler = self.beat
        if scheduler is None:
            return None
        signals.beat_embedded_init.send(sender=scheduler)

        def run() -> None:
            try:
                scheduler.run(stop)
            finally:
                scheduler.store.close()

        thread = threading.Thread(target=run, name="taskq-beat", daemon=True)
        thread.start()
        return thread

    def reload(self) -> None:
        """Celery's test-worker call after defining a task: nothing to do here, a task
        registered after the start is taken in when its first message arrives."""

    def stop(self, cold: bool = False) -> None:
        """Ask for a warm (or cold) stop. Safe from any thread, not from a signal handler."""
        self._stopping = True
        self._cold = self._cold or cold
        consumer = self.consumer
        if consumer is not None:
            self._pass_on_stop(consumer)
            consumer.call_soon(_nothing)  # end its wait for the broker now

    def _pass_on_stop(self, consumer: Consumer) -> None:
        if self._cold:
            consumer.cold_stop = True
        elif self._stopping:
            consumer.warm_stop = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop warm, a second one or SIGQUIT cold (main thread only).

        The handlers only record the signal (signal_inbox.py says why); the consumer's loop
        calls ``_act_on_signals``, which logs and stops.
        """
        self._inbox = SignalInbox()
        self._inbox.install(STOP_SIGNALS)

    def _act_on_signals(self) -> None:
        assert self._inbox is not None
        for signum in self._inbox.take():
            name = signal.Signals(signum).name
            if signum == getattr(signal, "SIGQUIT", None) or self._stopping:
                logger.warning(
                    "%s: cold shutdown (%s): running tasks are stopped, and their messages "
                    "go back to the broker",
                    self.hostname,
                    name,
                )
                signals.worker_shutting_down.send(
                    sender=self.hostname, sig=name, how="Cold", exitcode=1
                )
                self.stop(cold=True)
            else:
                logger.warning(
                    "%s: warm shutdown (%s): running tasks finish, reserved ones go back to "
                    "the broker; send %s again for a cold shutdown",
                    self.hostname,
                    name,
                    name,
                )
                signals.worker_shutting_down.send(
                    sender=self.hostname, sig=name, how="Warm", exitcode=0
                )
                self.stop()


def _nothing() -> None:
    pass
