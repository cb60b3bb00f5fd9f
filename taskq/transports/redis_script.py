"""The Lua script behind the Redis take, and the arguments and reply it works with.

One call applies the acks collected since the previous call, then pops up to ``want``
messages across the given lists (in order: priority-major, like kombu's BRPOP) and records
each in kombu's unacked hash and index, ``[payload, exchange, routing_key]``, so kombu's
sweep can restore it, and in ``taskq.held``: the messages a taskq worker holds, whose
leases it renews, as opposed to those a Celery worker holds (and never renews). An entry
that is not a kombu envelope is moved to ``taskq.unreadable`` instead of being lost.

Times are the server's (``TIME``), never a worker's: one host's clock, skewed or jumped,
cannot make another host's messages look abandoned. See ``redis_take`` for how it is
driven, and ``RENEW_SCRIPT`` for the leases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNREADABLE_KEY = "taskq.unreadable"
HELD_KEY = "taskq.held"
# The landing lists' leases: a sorted set of ``[landing key, queue key]`` (JSON, full key
# names) scored by the server's time of the last renewal. See ``redis_landing``.
LANDINGS_KEY = "taskq.landings"

# The server's time as seconds with microseconds, the unacked index's score.
_NOW = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
"""

# ARGV: held key, want, index key, hash key, unreadable key, n acks, acks..., n keys,
# (key, record flag)... -> {unreadable count, (key number, delivery tag, item)...}
TAKE_SCRIPT = (
    _NOW
    + """
local held, want = ARGV[1], tonumber(ARGV[2])
local index, hash, unreadable = ARGV[3], ARGV[4], ARGV[5]
local i = 7
local nacks = tonumber(ARGV[6])
while nacks > 0 do
  local n = math.min(nacks, 1000)  -- unpack() takes a few thousand values at most
  local tags = {}
  for j = 1, n do tags[j] = ARGV[i + j - 1] end
  redis.call('ZREM', index, unpack(tags))
  redis.call('HDEL', hash, unpack(tags))
  redis.call('SREM', held, unpack(tags))
  i, nacks = i + n, nacks - n
end
local nkeys = tonumber(ARGV[i])
i = i + 1
local out, taken, bad = {0}, 0, 0
local function field(t, name)
  if type(t) ~= 'table' then return nil end
  local v = t[name]
  if type(v) == 'string' then return v end
  return nil
end
for k = 1, nkeys do
  local key, record = ARGV[i], ARGV[i + 1] == '1'
  i = i + 2
  if taken < want then
    local items = redis.call('RPOP', key, want - taken)
    if items then
      for _, item in ipairs(items) do
        local ok, msg = pcall(cjson.decode, item)
        local props = ok and type(msg) == 'table' and msg['properties'] or nil
        local tag = field(props, 'delivery_tag')
        local info = type(props) == 'table' and props['delivery_info'] or nil
        local ex, rk = field(info, 'exchange'), field(info, 'routing_key')
        if tag == nil or ex == nil or rk == nil then
          -- Not a kombu envelope: keep it aside rather than lose it.
          redis.call('LPUSH', unreadable, item)
          bad = bad + 1
        else
          if record then
            redis.call('ZADD', index, now, tag)
            redis.call('SADD', held, tag)
            redis.call('HSET', hash, tag,
              '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
          end
          out[#out + 1] = k
          out[#out + 1] = tag
          out[#out + 1] = item
          taken = taken + 1
        end
      end
    end
  end
end
out[1] = bad
return out
"""
)

TAKE_SHA = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()


def _stamp_script(zadd_options: str) -> str:
    """KEYS: a sorted set. ARGV: members -> what ``ZADD`` counted. Scores each member with
    the server's time, ``ZADD`` given ``zadd_options``, in batches (unpack() takes a few
    thousand values at most)."""
    return (
        _NOW
        + """
local counted = 0
for i = 1, #ARGV, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #ARGV) do
    args[#args + 1] = now
    args[#args + 1] = ARGV[j]
  end
  counted = counted + redis.call('ZADD', KEYS[1], """
        + zadd_options
        + """unpack(args))
end
return counted
"""
    )


# The unacked index, ARGV the tags this worker holds: refreshes only entries still there
# (an acked message must not come back) -> how many changed.
RENEW_SCRIPT = _stamp_script("'XX', 'CH', ")

# Lua: put_back(landings key, member) -> messages moved. Ends one landing list's lease
# and moves what it holds back to the consuming end of its queue, newest first, so the
# oldest is taken first again, as it would have been. Atomic: a message is in one list or
# the other, never in neither.
_PUT_BACK = """
local function put_back(landings, member)
  local moved = 0
  local ok, pair = pcall(cjson.decode, member)
  if ok and type(pair) == 'table' and type(pair[1]) == 'string'
      and type(pair[2]) == 'string' then
    -- pcall: a key that is not a list (someone else's) must not stop every sweep.
    local item = redis.pcall('LMOVE', pair[1], pair[2], 'LEFT', 'RIGHT')
    while type(item) == 'string' do
      moved = moved + 1
      item = redis.pcall('LMOVE', pair[1], pair[2], 'LEFT', 'RIGHT')
    end
  end
  redis.call('ZREM', landings, member)
  return moved
end
"""

# KEYS: the unacked index, the held set, the landings set. ARGV: seconds a taskq lease
# lasts, seconds any other consumer's hold lasts, most tags (and landing lists) ->
# {messages put back from landing lists, tags due to be restored...}. The landing lists
# whose lease is out (their consumer stopped renewing it: dead or frozen) are put back
# here; the tags are restored by the caller: taskq's once their lease is out, anyone
# else's (a Celery worker's) only after the longer time, as that consumer itself would.
DUE_SCRIPT = (
    _NOW
    + _PUT_BACK
    + """
local lease, other, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {0}
local ended = redis.call('ZRANGE', KEYS[3], '-inf', tonumber(now) - lease, 'BYSCORE',
                         'LIMIT', 0, most)
for _, member in ipairs(ended) do
  out[1] = out[1] + put_back(KEYS[3], member)
end
local old = redis.call('ZRANGE', KEYS[1], '-inf', tonumber(now) - lease, 'BYSCORE',
                       'LIMIT', 0, most, 'WITHSCORES')
for i = 1, #old, 2 do
  local tag, score = old[i], tonumber(old[i + 1])
  if score <= tonumber(now) - other or redis.call('SISMEMBER', KEYS[2], tag) == 1 then
    out[#out + 1] = tag
  end
end
return out
"""
)

# The landings set, ARGV its members -> how many were new. A swept member comes back:
# its consumer is alive again and may land messages.
LANDING_RENEW_SCRIPT = _stamp_script("")

# KEYS: the landings set. ARGV: members -> messages put back. A consumer that closes ends
# its own landing lists' leases at once, rather than leave them to the sweep.
LANDING_END_SCRIPT = (
    _PUT_BACK
    + """
local moved = 0
for i = 1, #ARGV do moved = moved + put_back(KEYS[1], ARGV[i]) end
return moved
"""
)


# KEYS: a bell, then landing lists and their queue lists, in pairs -> messages moved.
# A consumer out of credit gives back what its watchers landed, to the consuming end of
# its queue, newest first (so the oldest is taken first), and silences its bell.
GIVE_BACK_SCRIPT = """
redis.call('DEL', KEYS[1])
local moved = 0
for i = 2, #KEYS, 2 do
  local item = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  while type(item) == 'string' do
    moved = moved + 1
    item = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  end
end
return moved
"""


@dataclass(frozen=True)
class Source:
    """One Redis list to take from: a queue at one priority step."""

    key: str  # unprefixed
    queue: str
    record: bool  # False for no-ack consumers: nothing to restore later
    home: str | None = None  # a landing list's: the key of the queue list it serves

    @property
    def wait_key(self) -> str:
        """The queue list this source's messages come from (its own key, but a landing
        list's home)."""
        return self.home or self.key


@dataclass(frozen=True)
class Item:
    source: Source
    tag: str
    raw: bytes


@dataclass(frozen=True)
class Taken:
    unreadable: int
    items: tuple[Item, ...]


def take_args(
    sources: Sequence[Source],
    want: int,
    acks: Sequence[str],
    prefix: str,
    keys: tuple[str, str],
) -> list[object]:
    """EVALSHA arguments (after the script's sha) for one take."""
    index, unacked = keys
    args: list[object] = [0, prefix + HELD_KEY, want, prefix + index, prefix + unacked]
    args.append(prefix + UNREADABLE_KEY)
    args.append(len(acks))
    args.extend(acks)
    args.append(len(sources))
    for source in sources:
        args.extend((prefix + source.key, 1 if source.record else 0))
    return args


def parse_taken(reply: Sequence[Any], sources: Sequence[Source]) -> Taken:
    items = tuple(
        Item(sources[int(reply[at]) - 1], reply[at + 1].decode(), reply[at + 2])
        for at in range(1, len(reply), 3)
    )
    return Taken(int(reply[0]), items)
