"""The cluster's shared state in Redis (``--redis-url``): which node holds
which channel, and what each node holds.

- ``miscord:channel:<id>`` = the node URL holding the channel: a lease the
  first join claims (SET NX PX) and its node renews while it holds the
  channel; a node that dies stops renewing, and after ``cluster_lease``
  seconds the next join anywhere claims the channel afresh.
- ``miscord:node:<url>`` = that node's record (its channels and their
  participants, whether it drains), rewritten as often, expiring the same way:
  what ``/api/channels`` shows cluster-wide, and how the other nodes learn
  that a node is gone.

Every call is bounded by a short timeout: Redis being away makes joins wait
or fail (``DirectoryError``), never a running call, whose signaling goes
straight from node to node.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

CHANNEL = "miscord:channel:"
NODE = "miscord:node:"
TIMEOUT = 1.0  # seconds any Redis call may take
UNREACHABLE = "the cluster directory is unreachable"

#: renew a lease only while this node still holds it (or it lapsed)
RENEW = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
"""


class DirectoryError(Exception):
    """Redis did not answer in time (or at all)."""


class Directory:
    def __init__(self, url: str, node: str, lease: float) -> None:
        self.node = node
        self.lease_ms = int(lease * 1000)
        self.redis = redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            decode_responses=True,
        )
        self._renew = self.redis.register_script(RENEW)

    async def owner(self, channel: str) -> str:
        """The node holding ``channel``; a free one is claimed for this node."""
        key = CHANNEL + channel
        try:
            while not await self.redis.set(key, self.node, nx=True, px=self.lease_ms):
                held: Any = await self.redis.get(key)
                if held is not None:  # else it lapsed in between: claim it
                    return str(held)
            return self.node
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"{UNREACHABLE}: {exc}") from None

    async def renew(self, channels: list[str], record: dict[str, Any]) -> None:
        """Keep this node's leases and record alive for another lease."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    await self._renew(
                        keys=[CHANNEL + channel],
                        args=[self.node, self.lease_ms],
                        client=pipe,
                    )
                pipe.set(NODE + self.node, json.dumps(record), px=self.lease_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DirectoryError(
                f"the cluster directory is unreachable: {exc}"
            ) from None

    async def records(self) -> dict[str, dict[str, Any]]:
        """Every live node's record, by node URL."""
        try:
            keys = [key async for key in self.redis.scan_iter(NODE + "*", count=100)]
            values = await self.redis.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise DirectoryError(
                f"the cluster directory is unreachable: {exc}"
            ) from None
        return {
            key.removeprefix(NODE): json.loads(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def release(self, channels: list[str]) -> None:
        """Give up this node's leases and record (a node that stops)."""
        try:
            for channel in channels:
                if await self.redis.get(CHANNEL + channel) == self.node:
                    await self.redis.delete(CHANNEL + channel)
            await self.redis.delete(NODE + self.node)
        except (RedisError, OSError):
            pass  # they lapse by themselves

    async def close(self) -> None:
        await self.redis.aclose()
