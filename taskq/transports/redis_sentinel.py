"""taskq's Redis transport on a master found through Redis Sentinel (``sentinel://`` URLs).

kombu's ``SentinelChannel`` differs from its Redis channel in one thing: its connection
pool is redis-py's ``SentinelConnectionPool``, whose connections ask the sentinels for the
current master each time they connect. taskq's channel (leases, parking, the atomic take,
the direct publish) sends everything on connections from that pool, so putting the two
together gives all of taskq's features on whichever server is the master now. After a
failover the old master's connections fail, the worker reconnects as after any lost
connection, and the new connections go to the promoted replica.

Transport options, as in kombu and Celery: ``master_name`` (required),
``min_other_sentinels``, ``sentinel_kwargs`` (connection keywords for the sentinels, e.g.
their password), and every option of taskq's Redis transport.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from ..redis_sentinel import MasterConnection, MasterSSLConnection
from .redis import Channel, Transport


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    connection_class = MasterConnection  # see taskq/redis_sentinel.py: follows the master
    connection_class_ssl = MasterSSLConnection
    # kombu's SentinelChannel comes after taskq's channel: it adds the pool and its fanout
    # topic, taskq's classes everything else.
    from_transport_options = (
        *Channel.from_transport_options,
        *(
            option
            for option in kombu_redis.SentinelChannel.from_transport_options
            if option not in Channel.from_transport_options
        ),
    )


class SentinelTransport(Transport):
    Channel = SentinelChannel
    default_port = 26379
