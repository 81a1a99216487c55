"""Join -> publish -> leave cycles in a process of their own (the soak's clients).

    python -m tests.load_churn --worker URL CHANNEL[,CHANNEL...]

Answers JSON lines on stdin (``benchmarks.common.Worker``): ``standing`` joins
one participant per channel that stays for the whole soak; ``cycles`` runs
``count`` cycles, ``concurrency`` at a time over the channels. A cycle joins,
publishes stamped audio, waits until it hears its channel's standing
participant *and* is heard by it (both directions of forwarding), then leaves.
Clients never decode (``raw_sink``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from benchmarks.common import emit
from miscord_client.client import VoiceClient
from miscord_client.load.media import Counter, StampedAudio
from tests.load_support import token

CYCLE_TIMEOUT = 15.0


class Churn:
    def __init__(self, url: str, channels: list[str]) -> None:
        self.url = url
        self.channels = channels
        self.standing: dict[str, tuple[VoiceClient, Counter]] = {}

    def client(self, user: str, channel: str, counter: Counter) -> VoiceClient:
        return VoiceClient(
            self.url, token(user, [channel]), ["127.0.0.1"], raw_sink=counter
        )

    async def stand(self) -> dict:
        for channel in self.channels:
            counter = Counter(latency_every=1000)
            client = self.client(f"standing-{channel}", channel, counter)
            await client.join(channel)
            await client.publish(microphone=StampedAudio())
            self.standing[channel] = (client, counter)
        return {"standing": len(self.standing)}

    async def cycle(self, k: int) -> float:
        channel = self.channels[k % len(self.channels)]
        host, heard_by_host = self.standing[channel]
        counter = Counter(latency_every=1000)
        client = self.client(f"churn-{k}", channel, counter)
        started = time.monotonic()
        try:
            async with asyncio.timeout(CYCLE_TIMEOUT):
                await client.join(channel)
                await client.publish(microphone=StampedAudio())
                # packets notify no one: poll (within the cycle's deadline)
                while not (  # noqa: ASYNC110
                    (host.peer_id, "microphone") in counter.streams
                    and (client.peer_id, "microphone") in heard_by_host.streams
                ):
                    await asyncio.sleep(0.02)
                await client.leave()
        finally:
            await client.close()
        return time.monotonic() - started

    async def cycles(self, first: int, count: int, concurrency: int) -> dict:
        numbers = iter(range(first, first + count))
        seconds: list[float] = []
        failed: list[str] = []

        async def loop() -> None:
            for k in numbers:
                try:
                    seconds.append(await self.cycle(k))
                except Exception as exc:
                    failed.append(f"cycle {k}: {type(exc).__name__}: {exc}"[:200])

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        seconds.sort()
        return {
            "done": len(seconds),
            "failed": failed,
            "seconds": time.monotonic() - started,
            "cycle_p50": seconds[len(seconds) // 2] if seconds else None,
            "cycle_max": seconds[-1] if seconds else None,
        }

    async def leave(self) -> dict:
        for client, _ in self.standing.values():
            await client.leave()
        return {"left": len(self.standing)}


async def main(url: str, channels: list[str]) -> None:
    # a subscribe offer that arrives while a cycle leaves fails in the client;
    # expected here, so not logged
    logging.getLogger("miscord.debug").setLevel(logging.CRITICAL)
    churn = Churn(url, channels)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "standing":
            reply = await churn.stand()
        elif cmd["cmd"] == "cycles":
            reply = await churn.cycles(cmd["first"], cmd["count"], cmd["concurrency"])
        else:
            reply = await churn.leave()
        emit(reply)
        if cmd["cmd"] == "leave":
            return


if __name__ == "__main__":
    asyncio.run(main(sys.argv[2], sys.argv[3].split(",")))
