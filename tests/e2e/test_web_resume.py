"""The web client resumes by itself (contract 1.1): after its socket dies,
after its peer connections die and when the browser comes back online, the
page is the same participant again and audio flows both ways; the other page
never sees it leave."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.browser

VOICE = "window.miscord.voiceService"
SIGNALING = "window.miscord.websocketService.get('voice')"


async def resumed(page, times: int, peer_id: str) -> None:
    await page.wait_for(
        f"([n, id]) => {SIGNALING}.resumes >= n && {VOICE}.state === 'connected'"
        f" && {VOICE}.peerId === id",
        [times, peer_id],
    )


async def test_the_page_resumes_after_its_socket_and_its_peer_connections_die(
    server, open_page
):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "resume"), bob.join("bob", "resume")
    )
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))
    alice_sees = f"[...{VOICE}.remote.values()].map((e) => [e.mid, e.peer_id])"
    before = await alice.js(alice_sees)
    manager = server.services.manager

    # the TCP connection under bob's socket dies (no close frame)
    manager.by_peer[b_id].request.transport.abort()
    await resumed(bob, 1, b_id)
    assert (await bob.debug())["websocket"]["voice"]["lastClose"]["code"] == 1006
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))

    # bob's peer connections die under it: it resumes with new ones
    uplink = server.services.sfu.participants[b_id].publish.pc
    await bob.js(f"{VOICE}.publishPc.close(); {VOICE}.subscribePc.close()")
    await resumed(bob, 2, b_id)
    assert server.services.sfu.participants[b_id].publish.pc is not uplink
    assert await bob.js(f"{VOICE}.publishPc.signalingState") == "stable"
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))

    # the browser says the network is back (maybe another one): new ones again
    uplink = server.services.sfu.participants[b_id].publish.pc
    await bob.js("window.dispatchEvent(new Event('online'))")
    await resumed(bob, 3, b_id)
    assert server.services.sfu.participants[b_id].publish.pc is not uplink
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))

    # alice's page went on: the same m-line plays bob, no leave was seen
    assert await alice.js(alice_sees) == before
    assert not [line for line in alice.console if "bob left" in line]
    assert manager.counters["kept"] == 3 and manager.counters["resumed"] == 3
    assert await alice.js(f"{VOICE}.state") == "connected"
