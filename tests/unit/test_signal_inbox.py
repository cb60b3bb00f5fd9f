"""Signals recorded by their handlers and taken by the loop; a forked child keeps none."""

from __future__ import annotations

import os
import select
import signal
import threading

from taskq import Taskq
from taskq.worker.signal_inbox import SignalInbox, forget_inherited_inbox
from taskq.worker.worker import Worker, WorkerOptions


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_signal_is_recorded_and_wakes_the_file_until_taken() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    inbox = SignalInbox()
    inbox.install([signal.SIGUSR2])
    try:
        assert inbox.take() == [] and not readable(inbox.fd)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert readable(inbox.fd)  # a poll on it would end now
        assert inbox.take() == [signal.SIGUSR2, signal.SIGUSR2]
        assert not readable(inbox.fd) and inbox.take() == []
    finally:
        inbox.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up file was put back too


def test_a_forked_child_takes_its_own_signals_and_leaves_the_parents_file_alone() -> None:
    inbox = SignalInbox()
    inbox.install([signal.SIGTERM])
    try:
        pid = os.fork()
        if pid == 0:  # the child: as a pool process's initializer does
            try:
                forget_inherited_inbox()
                os.kill(os.getpid(), signal.SIGTERM)  # the default action ends it here
            finally:
                os._exit(3)  # reached only if the signal was swallowed
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        assert not readable(inbox.fd)  # the child's signal did not wake the parent
        assert inbox.take() == []
    finally:
        inbox.uninstall()


def test_a_stop_asked_before_the_consumer_exists_is_kept() -> None:
    # A supervisor may stop a worker that is still starting its pool: the request waits for
    # the consumer instead of being dropped for want of one.
    app = Taskq("t", broker="memory://", backend="memory://", task_default_queue="early-stop")
    worker = Worker(app, WorkerOptions(pool="solo"))
    worker.stop()
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the worker ignored the stop it was given before it started"
    app.close()
