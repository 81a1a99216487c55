"""SIGTERM: every connection is closed with 1001 within 5 s, then the process exits.

The server is ``python -m signaling.cli serve`` in its own process
(``benchmarks.common.ServerProcess``), holding voice participants with media,
events watchers and sockets that never joined.
"""

import asyncio
import signal
import time

from benchmarks.common import ServerProcess
from miscord_client.client import VoiceClient
from miscord_client.load.media import Counter, StampedAudio
from tests.load_support import token
from tests.wsclient import Ws


async def test_sigterm_closes_every_connection_with_1001_within_5s():
    server = await ServerProcess.start()
    voice, sockets = [], []
    try:
        for i in range(4):
            client = VoiceClient(
                server.url, token(f"voice-{i}"), ["127.0.0.1"], raw_sink=Counter()
            )
            voice.append(client)
            await client.join(f"room-{i % 2}")
            await client.publish(microphone=StampedAudio())
        for i in range(10):
            ws = await Ws.open(server.url)
            sockets.append(ws)
            await ws.join(token(f"watcher-{i}"), channel=f"room-{i % 2}", kind="events")
        sockets += [await Ws.open(server.url) for _ in range(3)]  # never joined
        deadline = time.monotonic() + 10
        while not all(len(c.raw_sink.streams) == 1 for c in voice):
            assert time.monotonic() < deadline, "media never flowed"
            await asyncio.sleep(0.05)

        async def voice_closed(client: VoiceClient) -> tuple[int | None, float]:
            await client.wait_for(lambda: client.close_code is not None, timeout=10)
            return client.close_code, time.monotonic()

        async def ws_closed(ws: Ws) -> tuple[int | None, float]:
            return await ws.closed(timeout=10), time.monotonic()

        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        closes = await asyncio.gather(
            *(voice_closed(c) for c in voice), *(ws_closed(ws) for ws in sockets)
        )
        assert [code for code, _ in closes] == [1001] * (len(voice) + len(sockets))
        last = max(at for _, at in closes) - sent_at
        print(f"\nthe last connection closed {last:.3f} s after SIGTERM")
        assert last < 5.0
        code = await asyncio.to_thread(server.proc.wait, 10)
        assert code == 0 and time.monotonic() - sent_at < 5.0
    finally:
        await asyncio.gather(
            *(c.close() for c in voice), *(ws.close() for ws in sockets)
        )
        server.stop()
