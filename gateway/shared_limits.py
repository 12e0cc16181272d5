"""A cluster's limits, counted in Redis (CONTRACT §11) by Lua scripts on Redis's clock.

Each script runs atomically and reads the time with ``TIME``, so nodes whose clocks
differ still agree on every lease and window:

- connections: a sorted set per subscription of ``node:connection`` members scored by
  the lease's expiry (ms). Admitting drops expired members, counts the rest and adds
  one; a node renews its members every ``node_ttl / 3``; closing removes one. A node
  killed with ``kill -9`` renews nothing, so its members lapse within ``node_ttl``.
- rolling windows (events per minute, failed token requests and sign-ins): a sorted set
  of grants ``node:seq:count`` scored by when they were granted, plus their running sum.
  Asking for ``n`` drops grants older than the window and grants what still fits, so at
  most ``limit`` are granted in any rolling window, exactly, whichever node asks; unlike
  a token bucket or GCRA, idling never lets 2x through in one minute.

Redis errors reach the caller as one of :attr:`SharedLimits.errors`
(:class:`redis.exceptions.RedisError` or ``OSError``); :mod:`gateway.cluster` decides what
a node does without Redis (``on_redis_down``). redis-py is imported by :meth:`connect`
only: a gateway without ``cluster.redis`` never loads it (a tenth of its start's CPU).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX: Final = "sb:"

# KEYS[1] the subscription's leases; ARGV: member, limit, ttl (ms). 1: admitted, 0: full.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return 1
"""

# KEYS: leases, one per member; ARGV: ttl (ms), then the members. A lease that lapsed
# (its node was starved for longer than node_ttl) or that Redis lost (a restart) is put
# back: its stream is still open. A stream closing while this runs may come back for
# one node_ttl at most, since nobody renews it again.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * ttl)
end
return #KEYS
"""

# KEYS[1] the grants, KEYS[2] their sum; ARGV: wanted, limit, window (ms), member.
# Returns {granted, ms until the oldest grant leaves the window (0: none), now counted}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local horizon = now - window
local total = redis.call('GET', KEYS[2])
if total then
  total = tonumber(total)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon)) do
    total = total - tonumber(string.match(m, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
else
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
  total = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    total = total + tonumber(string.match(m, ':(%d+)$'))
  end
end
local granted = math.max(0, math.min(wanted, limit - total))
if granted > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. granted)
  total = total + granted
end
redis.call('SET', KEYS[2], total, 'PX', window + 1000)
redis.call('PEXPIRE', KEYS[1], window + 1000)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = 0
if oldest[2] then wait = tonumber(oldest[2]) + window - now end
return {granted, wait, total}
"""


@dataclass(frozen=True, slots=True)
class Taken:
    granted: int
    retry_after: int  # whole seconds until the oldest grant leaves the window, at least 1
    counted: int  # in the window now, the grant included


def key_of(kind: str, *parts: str) -> str:
    """``sb:<kind>:<parts as JSON>``: client ids and API names may hold any character."""
    return f"{PREFIX}{kind}:{json.dumps(parts, separators=(',', ':'))}"


class SharedLimits:
    """The scripts over one Redis client, for one node."""

    def __init__(
        self, client: Redis, node: str, errors: tuple[type[Exception], ...] = (OSError,)
    ) -> None:
        self.client = client
        self.node = node
        self.errors = errors  # what a failed call raises
        self._sequence = itertools.count()
        self._admit = client.register_script(_ADMIT)
        self._renew = client.register_script(_RENEW)
        self._take = client.register_script(_TAKE)

    @classmethod
    def connect(cls, url: str, node: str, timeout: float) -> Self:
        """Over a client of its own that connects on first use; ``timeout`` for each
        call, no retries: a node notices at once that Redis is gone."""
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client, node, (RedisError, OSError))  # TimeoutError is an OSError

    def member(self) -> str:
        """A name unique in the cluster: this node's and one of its counters."""
        return f"{self.node}:{next(self._sequence)}"

    async def admit(self, key: str, member: str, limit: int, ttl: float) -> bool:
        """Lease one of ``limit`` places of ``key`` to ``member`` for ``ttl`` seconds."""
        admitted = await self._admit(keys=[key], args=[member, limit, _ms(ttl)])
        return bool(admitted)

    async def renew(self, leases: list[tuple[str, str]], ttl: float) -> None:
        """Extend the leases (key, member) this node holds, putting back any Redis lost."""
        if leases:
            keys, members = zip(*leases, strict=True)
            await self._renew(keys=list(keys), args=[_ms(ttl), *members])

    async def release(self, key: str, member: str) -> None:
        await self.client.zrem(key, member)

    async def take(self, key: str, wanted: int, limit: int, window: float) -> Taken:
        """Up to ``wanted`` of the ``limit`` permits of any rolling ``window`` seconds
        (``wanted`` 0 only reads how many are counted)."""
        granted, wait_ms, counted = await self._take(
            keys=[key, key + ":sum"], args=[wanted, limit, _ms(window), self.member()]
        )
        return Taken(int(granted), max(1, math.ceil(int(wait_ms) / 1000)), int(counted))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
