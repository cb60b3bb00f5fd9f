"""Landing lists: where an idle consumer's waits move messages, kept safe by leases.

An idle consumer's wait (``redis_take``) and its watchers (``redis_watch``) move a message
from its queue into a list of this consumer's own, so that one message wakes one
consumer; the take behind the wait empties that list first. Between the move and the
take the message is only there, so every landing list has a lease in ``taskq.landings``
(``[landing key, queue list key]``, scored by the server's time): renewed by the lease
renewer of ``redis.Channel``, ended when the consumer closes, and, when a consumer dies or
freezes, run out, after which the unacked sweep moves the list back to the consuming end
of its queue (``redis_script.DUE_SCRIPT``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from .redis_park import ParkingChannel
from .redis_script import (
    GIVE_BACK_SCRIPT,
    LANDING_END_SCRIPT,
    LANDING_RENEW_SCRIPT,
    LANDINGS_KEY,
    Source,
)

logger = logging.getLogger(__name__)


class LandingChannel(ParkingChannel):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._landings: dict[str, Source] = {}  # by the key of the queue list they serve
        self._landings_made = 0

    def landing(self, source: Source) -> Source | None:
        """This consumer's landing list for waits on ``source``, leased before first use.

        Without its lease nobody would put back a message this consumer landed and then
        died holding, so a list whose lease cannot be written (Redis refusing writes) is
        not used: the wait leaves the message in place instead, as before landing lists.
        The lease is renewed by ``redis.Channel``'s renewer, which it starts before this.
        """
        landing = self._landings.get(source.key)
        if landing is not None:
            return landing
        key = f"taskq.landing.{self._consumer_id}.{self._landings_made}"
        self._landings_made += 1
        landing = Source(key, source.queue, source.record, home=source.key)
        try:
            self._sync_client().eval(
                LANDING_RENEW_SCRIPT, 1, self.global_keyprefix + LANDINGS_KEY,
                self._landing_member(landing),
            )  # fmt: skip
        except redis.ResponseError as exc:
            logger.debug("Redis refused a landing list's lease, waiting in place: %r", exc)
            return None
        self._landings[source.key] = landing
        return landing

    def landings(self) -> list[Source]:
        return list(self._landings.values())

    def forget_landings(self, queues: frozenset[str], stopped: bool) -> None:
        gone = [landing for landing in self.landings() if landing.queue in queues]
        for landing in gone:
            del self._landings[landing.wait_key]
            self._landed.pop(landing.key, None)
        if stopped:  # else their leases run out, and the sweep puts back what they hold
            self._end_leases([self._landing_member(landing) for landing in gone])

    def give_back_landed(self, bell: str) -> None:
        prefix = self.global_keyprefix
        keys = [bell]
        for landing in self.landings():
            keys += [prefix + landing.key, prefix + landing.wait_key]
        self._sync_client().eval(GIVE_BACK_SCRIPT, len(keys), *keys)

    def _landing_member(self, landing: Source) -> str:
        """Its entry in the landings set: ``[landing key, queue list key]``, both whole."""
        prefix = self.global_keyprefix
        return str(dumps([prefix + landing.key, prefix + landing.wait_key]))

    def _landing_members(self) -> list[str]:
        return [self._landing_member(landing) for landing in list(self._landings.values())]

    def renew_landings(self) -> None:
        members = self._landing_members()
        if members:
            key = self.global_keyprefix + LANDINGS_KEY
            self._sync_client().eval(LANDING_RENEW_SCRIPT, 1, key, *members)

    def close(self) -> None:
        # The watchers first: once Redis has stopped them, they can land nothing.
        if not self.closed and self._watchers.close(self._kill_client):
            self._end_landings()
        super().close()

    def _end_landings(self) -> None:
        # kombu's close reads the outstanding wait's reply first; so do we, a step early:
        # once it is read nothing can land any more, and the landing lists' leases can
        # end now rather than a visibility timeout later, by the sweep.
        members = self._landing_members()
        if not members:
            return
        try:
            if self._in_poll:
                with contextlib.suppress(kombu_redis.Empty):
                    self._brpop_read()
        except Exception as exc:
            logger.debug("Could not read the last wait: %r", exc)
            return
        self._end_leases(members)

    def _end_leases(self, members: list[str]) -> None:
        if not members:
            return
        try:
            key = self.global_keyprefix + LANDINGS_KEY
            self._sync_client().eval(LANDING_END_SCRIPT, 1, key, *members)
        except Exception as exc:
            logger.debug("Could not end the landing lists' leases: %r", exc)
