"""Stopping the consumer: warm (what runs finishes) or cold (it is cut short).

Both give back, at once, every message the worker holds and has not started: reserved,
held for an ETA or a rate limit, or handed to a pool process that had not begun it (the
pool withdraws those). A warm stop then waits for the running tasks and settles them as
usual; a cold one kills them and gives back their late-ack messages. Last, messages whose
state the keeper could not store yet go back too: the backend is away, and the task will
run again where it is back. Runs on the consumer thread, at the end of ``Consumer.run``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .connection import cancel_consumers
from .request import Request

if TYPE_CHECKING:
    from .consumer import Consumer

logger = logging.getLogger(__name__)

DRAIN_POLL = 0.05  # while running tasks finish, how long one wait for the broker lasts


def shut_down(consumer: Consumer) -> None:
    if consumer.connection is not None:
        cancel_consumers(consumer.kombu_consumers)
    return_unstarted(consumer)
    if not consumer.cold_stop:
        # Handed to the pool but not started: back to the broker now, not after the tasks
        # they wait behind.
        consumer.pool.withdraw()
        wait_for_active(consumer)
    if consumer.cold_stop:
        for request in consumer.active.values():
            request.interrupted = True
        consumer.pool.terminate()
    else:
        consumer.pool.stop()
    consumer.run_inbox()
    return_unstarted(consumer)  # anything delivered between the cancel and now
    for request in list(consumer.active.values()):
        if request.policy.acks_late:
            request.give_back()  # cold stop: what did not finish goes back
    consumer.active.clear()
    settle_unstored(consumer)
    consumer.monitor.offline(consumer.connection)
    consumer.close_connection()


def return_unstarted(consumer: Consumer) -> None:
    returned = list(consumer.ready) + list(consumer.held.values())
    consumer.ready.clear()
    consumer.held.clear()
    consumer.timers.clear()
    for request in returned:
        try:
            request.give_back()
        except Exception as exc:
            logger.warning("Could not return %r to the broker: %r", request, exc)
    if returned:
        logger.info("Returned %d reserved task(s) to the broker", len(returned))


def wait_for_active(consumer: Consumer) -> None:
    consumer.run_inbox()  # batches the pool just withdrew are settled first
    if consumer.active:
        logger.info("Waiting for %d running task(s) to finish", len(consumer.active))
    while consumer.active and not consumer.cold_stop:
        consumer.run_chores()  # a second signal turns this stop cold
        consumer.pool.poll_results()
        consumer.run_inbox()
        try:
            if consumer.connection is not None:
                consumer.connection.drain_events(timeout=DRAIN_POLL)
        except TimeoutError:
            pass
        except Exception as exc:
            logger.debug("drain during shutdown: %r", exc)
            time.sleep(DRAIN_POLL)


def settle_unstored(consumer: Consumer) -> None:
    # States the keeper could not store yet (the backend is away): their messages go back
    # unacked rather than wait for it, and run again where it is back.
    unsettled = consumer.keeper.abandon()
    for holder in unsettled:
        if isinstance(holder, Request):
            holder.give_back()
    if unsettled:
        logger.warning("Returned %d task(s) whose state could not be stored yet", len(unsettled))
    consumer.keeper.stop()
