"""The scheduler: sends each periodic task at its due times, once, however many run.

Entries come from ``beat_schedule`` (Celery's dicts) and ``app.add_periodic_task``. Each
beat keeps, per entry, the next due time; when it comes, the beat claims that due time in
the shared store (beat_store.py) and sends the task only if its claim succeeds, then marks
it sent. Every beat computes the same due times from the same shared mark, so they compete
for the same claims. The task id is derived from the entry and the due time: a send
repeated after a crash between the send and the mark carries the same id.

Runs missed while every beat was down are sent once when a beat starts (Celery's
behaviour: the latest missed due time only), or skipped with ``"missed": "skip"`` in the
entry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from .backoff import Incident
from .beat_store import BeatStore, due_key
from .exceptions import ConfigurationError
from .schedules import Schedule, ScheduleError, app_zone, as_schedule, crontab, schedule
from .sentinel import SENTINEL_SCHEME, sentinel_options

if TYPE_CHECKING:
    from .app import Taskq
    from .signature import Signature

logger = logging.getLogger(__name__)

ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative", "missed"})
MISSED = ("once", "skip")
# Ids of the tasks beat sends: the same for the same entry and due time, on every beat.
ID_NAMESPACE = uuid.UUID("6d1c1f52-5b0e-4f4c-9a55-2a1f0c3b7e21")
# A due time later than this is "missed" (all beats were down), not merely a little late.
MISSED_AFTER = 60.0


@dataclass(frozen=True)
class Entry:
    """One periodic task: what to send, how, and when."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    missed: str = "once"

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> Entry:
        """A ``beat_schedule`` value, checked: what is wrong is said with the entry's name."""
        what = f"beat_schedule entry {name!r}"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{what}: expected a dict, not {type(spec).__name__}")
        unknown = sorted(set(spec) - ENTRY_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{what}: unknown key(s) {', '.join(unknown)}; an entry has "
                f"{', '.join(sorted(ENTRY_KEYS))}"
            )
        task = spec.get("task")
        if not isinstance(task, str) or not task:
            raise ConfigurationError(f"{what}: 'task' must be a task name")
        if "schedule" not in spec:
            raise ConfigurationError(f"{what}: 'schedule' is missing")
        when = as_schedule(spec["schedule"], what)
        if spec.get("relative") and isinstance(when, schedule):
            when = schedule(when.run_every, relative=True)
        args, kwargs = spec.get("args", ()), spec.get("kwargs", {})
        if not isinstance(args, list | tuple):
            raise ConfigurationError(f"{what}: 'args' must be a list or tuple")
        if not isinstance(kwargs, Mapping) or not isinstance(spec.get("options", {}), Mapping):
            raise ConfigurationError(f"{what}: 'kwargs' and 'options' must be dicts")
        missed = spec.get("missed", "once")
        if missed not in MISSED:
            raise ConfigurationError(f"{what}: 'missed' must be 'once' or 'skip'")
        return cls(name, task, when, tuple(args), dict(kwargs), dict(spec.get("options", {})),
                   missed)  # fmt: skip

    def task_id(self, due: float) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.name}\n{due_key(due)}"))

    def describe(self) -> str:
        return f"{self.name}: {self.task} {self.schedule!r}"


def periodic_entry(
    when: Any,
    sig: Signature,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    name: str | None,
    options: Mapping[str, Any],
) -> Entry:
    """``app.add_periodic_task``'s entry: named ``name``, else after the signature."""
    key = name or repr(sig)
    return Entry(
        key,
        sig.task,
        as_schedule(when, f"periodic task {key!r}"),
        tuple(args or sig.args),
        dict(kwargs or sig.kwargs),
        {**sig.options, **options},
    )


def entries_of(app: Taskq) -> list[Entry]:
    """``beat_schedule`` and the entries added with ``add_periodic_task``, by name."""
    found = {name: Entry.from_dict(name, spec) for name, spec in app.conf.beat_schedule.items()}
    found.update({e.name: e for e in app.periodic_tasks})
    return [found[name] for name in sorted(found)]


def check_tasks(app: Taskq, entries: list[Entry]) -> None:
    """Every entry names a task this app knows (its imports done): else say which."""
    unknown = [e for e in entries if e.task not in app.tasks]
    if unknown:
        names = ", ".join(f"{e.name!r} ({e.task})" for e in unknown)
        raise ConfigurationError(
            f"beat_schedule: no task registered under the name of {names}; check the "
            "name, or that imports/include/autodiscover_tasks load the module that defines it"
        )


@dataclass
class _Due:
    entry: Entry
    next: float  # epoch seconds


class Beat:
    """Sends due entries until stopped; any number of them may share one store."""

    def __init__(
        self,
        app: Taskq,
        store: BeatStore,
        entries: list[Entry],
        *,
        lease: float = 10.0,
        max_interval: float = 300.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.app = app
        self.store = store
        self.entries = entries
        self.lease = lease
        self.max_interval = max_interval
        self.owner = owner or uuid.uuid4().hex
        self.clock = clock
        self.tz: tzinfo = app_zone(app.conf.timezone, app.conf.enable_utc)
        self.sent = 0
        self._due: list[_Due] = []
        self._last_rescue = 0.0
        # A broker or store that is away fails every tick and send: said once, then less.
        self._sending = Incident(logger, "Scheduler: could not send a due task")
        self._ticking = Incident(logger, "Scheduler: could not look at the schedule")

    def setup(self) -> None:
        now = self.clock()
        self._due = [_Due(e, self._first_due(e, now)) for e in self.entries]

    def _first_due(self, entry: Entry, now: float) -> float:
        last = self.store.start(entry.name, now)
        due = self._after(entry, last)
        if due <= now - self.lease:  # every beat was down past at least one due time
            if entry.missed == "skip":
                logger.info("Scheduler: %s missed runs while no beat ran; skipped", entry.name)
                return self._after(entry, now)
            latest = self._latest_due(entry, due, now)
            logger.info("Scheduler: %s missed runs while no beat ran; sending the last, due "
                        "%s", entry.name, _show(latest))  # fmt: skip
            return latest
        return due

    def _after(self, entry: Entry, moment: float) -> float:
        return entry.schedule.next_after(datetime.fromtimestamp(moment, UTC), self.tz).timestamp()

    def _latest_due(self, entry: Entry, due: float, now: float) -> float:
        if isinstance(entry.schedule, schedule) and not entry.schedule.relative:
            step = entry.schedule.run_every.total_seconds()
            return due + ((now - due) // step) * step
        latest = due
        for _ in range(100_000):
            following = self._after(entry, latest)
            if following > now:
                break
            latest = following
        return latest

    def tick(self) -> float:
        """Send what is due now; the seconds until the next due time (capped)."""
        now = self.clock()
        if now - self._last_rescue >= self.lease / 2:
            self._last_rescue = now
            for item in self._due:
                self._rescue(item.entry)
        for item in self._due:
            while item.next <= now:
                self._send_if_claimed(item.entry, item.next)
                item.next = self._after(item.entry, item.next)
                if item.next <= now - MISSED_AFTER:  # a long pause (suspend): as at start
                    item.next = self._latest_due(item.entry, item.next, now)
        upcoming = min((item.next for item in self._due), default=now + self.max_interval)
        return max(0.0, min(upcoming - self.clock(), self.max_interval, self.lease / 2))

    def _rescue(self, entry: Entry) -> None:
        """Due times another beat claimed and never sent (it died): send them now."""
        for due in self.store.abandoned(entry.name):
            logger.warning("Scheduler: %s due %s was claimed by a beat that stopped; sending "
                           "it now", entry.name, _show(due))  # fmt: skip
            self._send_if_claimed(entry, due)

    def _send_if_claimed(self, entry: Entry, due: float) -> None:
        if not self.store.claim(entry.name, due, self.owner, self.lease):
            return  # another beat sends it, or sent it
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.app.send_task(entry.task, entry.args, entry.kwargs,
                               task_id=entry.task_id(due), **entry.options)  # fmt: skip
        except Exception as exc:
            # The claim stays, and runs out: this beat, or another, tries it again then.
            self._sending.failed(exc, f"{entry.name} (due {_show(due)}) is tried again later")
            return
        self._sending.resolve()
        self.store.sent(entry.name, due)
        self.sent += 1

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a store or broker that is away is waited for."""
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    self.setup()
                    ready = True
                wait = self.tick()
                self._ticking.resolve()
            except Exception as exc:
                # The store or the broker is away: say so, and try again shortly.
                wait = min(1.0, self.lease / 2)
                self._ticking.failed(exc, f"trying again in {wait:g} s")
            stop.wait(wait)

    def schedule_text(self) -> str:
        lines = [f"  {e.describe()}" for e in self.entries] or ["  (no entries)"]
        return "\n".join(lines)


def make_beat(app: Taskq, max_interval: float | None = None) -> Beat:
    """The scheduler for ``app``: its tasks imported, its schedule read and checked."""
    app.import_task_modules()
    app.finalize()  # on_after_configure receivers add their periodic tasks here
    entries = entries_of(app)
    check_tasks(app, entries)
    c = app.conf
    return Beat(
        app,
        open_store(app),
        entries,
        lease=c.beat_claim_lease,
        max_interval=max_interval or c.beat_max_loop_interval,
    )


def open_store(app: Taskq) -> BeatStore:
    """The store on the broker the app has (or its result backend, on RabbitMQ)."""
    from .beat_store import MemoryBeatStore, RedisBeatStore, SqliteBeatStore

    broker = app.broker_url
    backend = app.backend_url or ""
    for url in (broker, backend):
        scheme = url.split("://", 1)[0].lower()
        if scheme in ("redis", "rediss", "unix"):
            return RedisBeatStore(url, app.main)
        if scheme == SENTINEL_SCHEME:
            setting = "result_backend_transport_options"
            if url is broker:
                setting = "broker_transport_options"
            options = sentinel_options(app.conf[setting])
            return RedisBeatStore(url, app.main, options, setting)
        if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return SqliteBeatStore(url[len("sqlite:///") :] + ".beat")
        if url is broker and scheme == "memory":
            return MemoryBeatStore()
    raise ConfigurationError(
        "taskq beat keeps its schedule state, and the claims that let several beats run, "
        "in Redis or SQLite: on this broker, set result_backend to redis:// or "
        "sqlite:///path (or use a Redis broker)."
    )


def _show(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


__all__ = [
    "Beat",
    "Entry",
    "ScheduleError",
    "check_tasks",
    "crontab",
    "entries_of",
    "make_beat",
    "open_store",
    "periodic_entry",
    "schedule",
]
