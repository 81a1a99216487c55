"""Run by tests/integration/test_reachability.py inside a network namespace
of its own whose local route gives 127.0.0.3 as the host's address: a server
bound to 0.0.0.0 announcing 127.0.0.3, two tone clients on 127.0.0.1. Prints
one JSON line: who heard whom, the server's candidates, the pairs in use."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestServer

from miscord_client import ice
from miscord_client.client import VoiceClient
from signaling import auth
from signaling.app import create_app
from tests.conftest import SECRET, test_settings
from tests.media import ToneTrack
from tests.voice import Ears

ANNOUNCED = "127.0.0.3"


async def main() -> dict[str, object]:
    app = create_app(test_settings(ice_hosts=["0.0.0.0"], announced_ip=ANNOUNCED))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    people = {}
    try:
        for user, freq in (("alice", 440), ("bob", 660)):
            client = VoiceClient(
                url, auth.issue(SECRET, user, ["*"]), ice_hosts=["127.0.0.1"]
            )
            await client.join("room")
            await client.publish(microphone=ToneTrack(freq))
            people[user] = client
        heard = {}
        for user, other, freq in (("alice", "bob", 660), ("bob", "alice", 440)):
            ears = Ears(people[user])
            try:
                await ears.hears(people[other].peer_id, freq, timeout=10)
                heard[user] = True
            except AssertionError:
                heard[user] = False
            await ears.stop()
        candidates, selected = [], set()
        for client in people.values():
            for pc in (client.publish_pc, client.subscribe_pc):
                assert pc is not None and pc.remoteDescription is not None
                for line in pc.remoteDescription.sdp.splitlines():
                    if line.startswith("a=candidate:"):
                        fields = line.split()
                        candidates.append((fields[4], int(fields[5]), fields[7]))
                (connection,) = ice.connections(pc)
                pair = connection._nominated.get(1)
                if pair is not None:
                    selected.add(pair.remote_addr[0])
        return {
            "heard": heard,
            "candidates": candidates,
            "selected_remote": sorted(selected),
        }
    finally:
        for client in people.values():
            await client.close()
        await server.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
