"""SIGTERM drains (contract 1.1, "Operating it"): readiness 503 at once, 1013
for newcomers, ``draining`` with the deadline to everyone, calls go on until
they end or the deadline, then 1001 and exit status 0.

The server is ``python -m signaling.cli serve`` in its own process
(``benchmarks.common.ServerProcess``), holding voice participants with media,
events watchers and sockets that never joined.
"""

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from benchmarks.common import ServerProcess
from miscord_client.client import VoiceClient
from miscord_client.load.media import Counter, StampedAudio
from tests.load_support import token
from tests.wsclient import Ws


@dataclass
class Call:
    server: ServerProcess
    voice: list[VoiceClient] = field(default_factory=list)
    watchers: list[Ws] = field(default_factory=list)
    unjoined: list[Ws] = field(default_factory=list)

    def received(self) -> list[int]:
        """Packets each voice client has received so far."""
        return [
            sum(s.packets for s in c.raw_sink.streams.values())  # type: ignore[union-attr]
            for c in self.voice
        ]

    async def status(self, path: str) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.server.url + path) as resp,
        ):
            return resp.status


async def start_call(drain_timeout: float) -> Call:
    server = await ServerProcess.start("--drain-timeout", str(drain_timeout))
    call = Call(server)
    for i in range(2):
        client = VoiceClient(
            server.url, token(f"voice-{i}"), ["127.0.0.1"], raw_sink=Counter()
        )
        call.voice.append(client)
        await client.join("room")
        await client.publish(microphone=StampedAudio())
    for i in range(3):
        ws = await Ws.open(server.url)
        call.watchers.append(ws)
        await ws.join(token(f"watcher-{i}"), channel="room", kind="events")
    call.unjoined.append(await Ws.open(server.url))
    deadline = time.monotonic() + 10
    while not all(n > 0 for n in call.received()):
        assert time.monotonic() < deadline, "media never flowed"
        await asyncio.sleep(0.05)
    return call


@pytest.fixture
async def drained(request: pytest.FixtureRequest) -> AsyncIterator[Call]:
    call = await start_call(request.param)
    try:
        yield call
    finally:
        await asyncio.gather(
            *(c.close() for c in call.voice),
            *(ws.close() for ws in call.watchers + call.unjoined),
        )
        call.server.stop()


async def signal_and_check_refusals(call: Call) -> float:
    """SIGTERM; readiness goes 503 within 1 s while liveness stays 200; a new
    join is closed 1013; returns when the signal was sent."""
    assert await call.status("/readyz") == 200
    sent_at = time.monotonic()
    call.server.proc.send_signal(signal.SIGTERM)
    while await call.status("/readyz") != 503:
        assert time.monotonic() - sent_at < 1.0, "/readyz still 200 after 1 s"
        await asyncio.sleep(0.02)
    print(f"\n/readyz 503 after {time.monotonic() - sent_at:.3f} s")
    assert await call.status("/healthz") == 200
    newcomer = await Ws.open(call.server.url)
    await newcomer.send(
        {"type": "join", "token": token("late"), "channel": "room", "kind": "voice"}
    )
    assert await newcomer.closed() == 1013
    await newcomer.close()
    return sent_at


@pytest.mark.parametrize("drained", [3.0], indirect=True)
async def test_sigterm_keeps_calls_until_the_deadline_then_1001_and_exit_0(
    drained: Call,
) -> None:
    call = drained
    sent_at = await signal_and_check_refusals(call)
    for client in call.voice:
        told = await client.wait_for_message("draining")
        assert told["deadline_s"] == 3.0
    for ws in call.watchers:
        assert (await ws.expect("draining"))["deadline_s"] == 3.0
    # the call goes on: both still receive, 2 s after the signal
    await asyncio.sleep(max(0.0, sent_at + 2.0 - time.monotonic()))
    before = call.received()
    await asyncio.sleep(0.5)
    after = call.received()
    assert all(b - a > 10 for a, b in zip(before, after, strict=True)), (before, after)
    codes = await asyncio.gather(
        *(c.wait_closed(timeout=5) for c in call.voice),
        *(ws.closed(timeout=5) for ws in call.watchers + call.unjoined),
    )
    closed_after = time.monotonic() - sent_at
    print(f"closed {closed_after:.3f} s after SIGTERM (deadline 3 s)")
    assert codes == [1001] * 6
    assert 2.5 < closed_after < 6.0
    assert await asyncio.to_thread(call.server.proc.wait, 10) == 0


@pytest.mark.parametrize("drained", [30.0], indirect=True)
async def test_the_drain_ends_when_the_last_call_ends(drained: Call) -> None:
    call = drained
    await signal_and_check_refusals(call)
    for client in call.voice:
        await client.wait_for_message("draining")
    left_at = time.monotonic()
    for client in call.voice:
        await client.leave()
    # the events watchers do not hold the drain open
    codes = await asyncio.gather(*(ws.closed(timeout=5) for ws in call.watchers))
    assert codes == [1001] * 3
    assert await asyncio.to_thread(call.server.proc.wait, 10) == 0
    print(f"\nexited {time.monotonic() - left_at:.3f} s after the last leave")
    assert time.monotonic() - left_at < 3.0
