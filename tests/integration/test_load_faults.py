"""Participants that vanish mid-call are reaped in time; the others never notice.

20 % of the participants of two channels disappear without a goodbye, either
SIGKILLed with their client process or with their media cut while their
WebSocket stays open. The server runs in its own process; the remaining
participants (load-tool workers) measure every stream's loss and the longest
gap between packet arrivals.
"""

import asyncio
import time

import pytest

from miscord_client.client import VoiceClient
from miscord_client.load.media import Counter, StampedAudio
from tests.faults import OutgoingFault
from tests.load_support import Call, CensusServer, assert_continuous, token

SILENCE = 3.0  # --media-silence
GRACE = 3.0  # --media-grace
RESUME = 2.0  # --resume-grace: a killed participant is kept this long
CHANNELS = ("north", "south")
#: four who stay in each channel, over two client processes
SURVIVORS = [(f"{c}-{i}", c, i % 2) for c in CHANNELS for i in range(4)]
STAYING = {user for user, _, _ in SURVIVORS}


@pytest.fixture
async def server():
    server = await CensusServer.start(
        "--media-silence",
        str(SILENCE),
        "--media-grace",
        str(GRACE),
        "--resume-grace",
        str(RESUME),
    )
    yield server
    server.stop()


def consistent(census, participants):
    """Every registry agrees on ``participants`` who all hear each other."""
    return census["participants"] == census["connections"] == census[
        "by_peer"
    ] == census["publications"] == census["diagnosed_live"] == participants and census[
        "downlinks"
    ] == participants * (participants // 2 - 1)


async def test_sigkilled_participants_are_reaped_within_grace_and_the_rest_hear_on(
    server,
):
    # the fifth participant of each channel alone in a process that gets killed
    doomed = [(f"{c}-doomed", c, 2 + k) for k, c in enumerate(CHANNELS)]
    call = await Call.start(server, SURVIVORS + doomed)
    try:
        assert consistent(await server.census(), 10)
        await call.run.open_window()
        await asyncio.sleep(1.0)
        for _, _, process in doomed:
            call.kill(process)
        killed_at = time.monotonic()
        await server.until(lambda c: consistent(c, 8), timeout=RESUME + 5)
        assert time.monotonic() - killed_at < RESUME + 1.5
        await asyncio.sleep(1.0)  # the survivors renegotiated: keep listening
        subscriptions = await call.measure(STAYING)
        assert len(subscriptions) == 2 * 4 * 3
        assert_continuous(subscriptions)
    finally:
        await call.close()


async def test_participants_whose_media_is_cut_are_reaped_and_the_rest_hear_on(
    server,
):
    doomed = []
    for channel in CHANNELS:
        client = VoiceClient(  # ended by the server (4408): no coming back
            server.url,
            token(f"{channel}-doomed"),
            ["127.0.0.1"],
            raw_sink=Counter(),
            resume=False,
        )
        await client.join(channel)
        await client.publish(microphone=StampedAudio())
        doomed.append(client)
    call = await Call.start(server, SURVIVORS)
    try:
        await server.until(lambda c: consistent(c, 10))
        await call.run.open_window()
        await asyncio.sleep(1.0)
        for client in doomed:  # the transport dies; the WebSocket stays open
            for pc in (client.publish_pc, client.subscribe_pc):
                OutgoingFault(pc).cut = True
        cut_at = time.monotonic()
        await server.until(lambda c: consistent(c, 8), timeout=SILENCE + GRACE + 5)
        elapsed = time.monotonic() - cut_at
        assert GRACE < elapsed < SILENCE + GRACE + 2.5
        for client in doomed:  # and their sockets are closed, not left dangling
            await client.wait_for(lambda c=client: c.close_code is not None, 5)
            assert client.close_code == 4408
        await asyncio.sleep(1.0)
        assert_continuous(await call.measure(STAYING))
    finally:
        await call.close()
        await asyncio.gather(*(c.close() for c in doomed))
