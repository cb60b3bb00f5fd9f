"""Chord joins on Redis: Celery 5.7's keys and join rules, each step one atomic script.

The rules are in chords.py. A Celery worker that finishes a member of the same chord runs
its own script over the same keys (``.j`` a sorted set of ``[1, id, state, result]`` by
group index, ``.d`` the members counted, ``.s``/``.t`` the size, ``.c`` the claim and then
``done``), so a header split across Celery and taskq workers is joined once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from ..exceptions import BackendError
from .chords import Chords, PartReturn
from .retry import retrying

T = TypeVar("T")

# KEYS: .j .t .s .d <group> .c   ARGV: member, entry, score, ttl, claim_s, token
PART_SCRIPT = """
if redis.call('GET', KEYS[6]) == 'done' then return {-1, '', ''} end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[1])
end
local count = redis.call('ZCARD', KEYS[1])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('EXPIRE', KEYS[5], ttl) end
end
local size = redis.call('GET', KEYS[3])
if not size then return {count, '', 0} end
local total = tonumber(size) + tonumber(redis.call('GET', KEYS[2]) or '0')
local claimed = 0
if count >= total and redis.call('SET', KEYS[6], ARGV[6], 'NX', 'EX', ARGV[5]) then
  claimed = 1
end
return {count, tostring(total), claimed}
"""

# KEYS: .c .s .b   ARGV: token, claim_s, ttl
CLAIM_BODY_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
elseif not holder and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  return 'lost'
end
local body = redis.call('GET', KEYS[3])
if body and string.sub(body, 1, 4) == 'ran:' then return 'ran' end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[3], ARGV[1])
end
return 'go'
"""

# KEYS: .b   ARGV: token
BODY_STARTS_SCRIPT = """
local body = redis.call('GET', KEYS[1])
if not body or body == 'ran:' .. ARGV[1] then return 1 end
if body == ARGV[1] then
  redis.call('SET', KEYS[1], 'ran:' .. ARGV[1], 'KEEPTTL')
  return 1
end
return 0
"""

# KEYS: .c .j .t .s .d   ARGV: token, done_s
CLEANUP_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
"""


class RedisChords(Chords):
    """Chord joins for ``RedisBackend`` (which provides the client and the retry policy)."""

    client: Any
    _thread_client: Callable[[], Any]
    store_policy: Callable[..., Any]
    transient: Callable[[BaseException], bool]
    _error: Callable[[redis.RedisError], BackendError]

    def _scripts(self) -> dict[str, Any]:
        scripts: dict[str, Any] | None = self.__dict__.get("_chord_scripts")
        if scripts is None:
            scripts = self.__dict__["_chord_scripts"] = {
                name: self.client.register_script(text)
                for name, text in (
                    ("part", PART_SCRIPT),
                    ("claim", CLAIM_BODY_SCRIPT),
                    ("starts", BODY_STARTS_SCRIPT),
                    ("cleanup", CLEANUP_SCRIPT),
                )
            }
        return scripts

    def _run(self, what: str, call: Callable[[Any], T]) -> T:
        try:
            return retrying(
                self.store_policy(), lambda: call(self._thread_client()), self.transient, what
            )
        except BackendError:
            raise
        except redis.RedisError as exc:
            raise self._error(exc) from exc

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts()[name]
        return self._run(f"join chord ({name})", lambda c: script(keys=keys, args=args, client=c))

    def _ttl(self) -> int:
        return max(1, int(self.chord_expires)) if self.chord_expires else 0

    def set_chord_size(self, group_id: str, size: int) -> None:
        def call(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self.group_key(group_id, ".c"), self.group_key(group_id, ".b"))
            pipe.set(self.group_key(group_id, ".s"), int(size), ex=self._ttl() or None)
            pipe.execute()

        self._run(f"start chord {group_id}", call)

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        key = self.group_key(group_id, ".t")
        self._run(f"grow chord {group_id}", lambda c: c.incrby(key, count))

    def chord_part(
        self,
        group_id: str,
        member: str,
        score: float,
        entry: bytes | str,
        token: str,
        claim_s: int,
        before: Callable[[], None] | None = None,
    ) -> PartReturn:
        if before is not None:
            before()  # the store, then the count, as Celery's order
        g = self.group_key
        keys = [g(group_id, ".j"), g(group_id, ".t"), g(group_id, ".s"), g(group_id, ".d"),
                g(group_id), g(group_id, ".c")]  # fmt: skip
        score_arg = "+inf" if score == float("inf") else repr(score)
        count, total, claimed = self._script(
            "part", keys, [member, entry, score_arg, self._ttl(), claim_s, token]
        )
        total_text = total.decode() if isinstance(total, bytes) else str(total)
        return PartReturn(int(count), int(total_text) if total_text else None, bool(claimed))

    def chord_entries(self, group_id: str) -> list[bytes | str]:
        key = self.group_key(group_id, ".j")
        raw: list[bytes | str] = self._run(f"read chord {group_id}", lambda c: c.zrange(key, 0, -1))
        return raw  # as stored: the result serializer's bytes

    def chord_claim_body(self, group_id: str, token: str, claim_s: int) -> str:
        g = self.group_key
        keys = [g(group_id, ".c"), g(group_id, ".s"), g(group_id, ".b")]
        verdict = self._script("claim", keys, [token, claim_s, self._ttl()])
        return verdict.decode() if isinstance(verdict, bytes) else str(verdict)

    def chord_body_starts(self, group_id: str, token: str) -> bool:
        return bool(self._script("starts", [self.group_key(group_id, ".b")], [token]))

    def chord_cleanup(self, group_id: str, token: str, done_s: int) -> bool:
        g = self.group_key
        keys = [g(group_id, s) for s in (".c", ".j", ".t", ".s", ".d")]
        return bool(self._script("cleanup", keys, [token, done_s]))

    def chord_drop_size(self, group_id: str) -> None:
        key = self.group_key(group_id, ".s")
        self._run(f"drop chord size {group_id}", lambda c: c.delete(key))
