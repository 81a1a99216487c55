"""A voice participant in its own process (for tests that kill it or that must
keep every codec out of the server's process).

    python -m tests.tone_client URL TOKEN CHANNEL FREQ

Prints one JSON line when joined, then every 0.5 s the share of each heard tone
per remote peer: {"peer_id": {"freq": share}}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from miscord_client.client import VoiceClient
from tests.media import ToneTrack, tone_share
from tests.voice import Ears

LISTEN = (440.0, 660.0, 880.0, 1000.0)


async def main(url: str, token: str, channel: str, freq: float) -> None:
    client = VoiceClient(url, token, ice_hosts=["127.0.0.1"])
    await client.join(channel)
    await client.publish(microphone=ToneTrack(freq))
    print(json.dumps({"joined": client.peer_id}), flush=True)
    ears = Ears(client)
    while True:
        await asyncio.sleep(0.5)
        ears.refresh()
        heard = {
            peer: {str(f): round(tone_share(rec.last(0.5), f), 3) for f in LISTEN}
            for peer, rec in ears.recorders.items()
        }
        print(json.dumps({"heard": heard}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
