"""A departed participant is freed by reference counting alone.

Were its objects left in reference cycles, each leave would add garbage for
CPython's full collection, whose pause (hundreds of ms with many peer
connections) stalls every call on the server. So: with the collector off, every
server-side object of a participant that left must be gone.
"""

import asyncio
import gc
import weakref

from tests.media import CounterScreen
from tests.voice import settle, tone_participant

DTLS = {"dtls:microphone", "dtls:screen"}


def server_objects(server, peer_id):
    participant = server.services.sfu.participants[peer_id]
    objects = {
        "participant": participant,
        "publish_pc": participant.publish.pc,
        "subscribe_pc": participant.subscribe.pc,
    }
    for pub in participant.publish.publications.values():
        objects[f"publication:{pub.source}"] = pub
        objects[f"receiver:{pub.source}"] = pub.transceiver.receiver
        objects[f"dtls:{pub.source}"] = pub.transceiver.receiver.transport
    for i, downlink in enumerate(participant.subscribe.downlinks):
        objects[f"downlink:{i}"] = downlink
        objects[f"sender:{i}"] = downlink.transceiver.sender
    return {name: weakref.ref(obj) for name, obj in objects.items()}


def publications(server, client):
    return server.services.sfu.participants[
        client.peer_id
    ].publish.publications.values()


async def test_a_participant_that_leaves_is_freed_without_the_garbage_collector(
    server, clients
):
    anchor = await tone_participant(clients, server, "anchor", 440)
    await anchor.publish(screen=CounterScreen())
    visitor = await tone_participant(clients, server, "visitor", 660)
    await visitor.publish(screen=CounterScreen())
    await visitor.wait_for_track(anchor.peer_id, "screen")
    await anchor.wait_for_track(visitor.peer_id, "screen")
    # leave in a steady state: aiortc's own connect task can race a close in the
    # middle of a renegotiation and log an error whose traceback keeps the pc
    await settle(lambda: all(p.first_packet_at for p in publications(server, visitor)))
    refs = server_objects(server, visitor.peer_id)
    assert len(refs) >= 11
    gc.collect()
    gc.disable()
    try:
        await visitor.leave()
        await settle(lambda: visitor.peer_id not in server.services.sfu.participants)
        # aiortc's last tasks of a closed connection finish within moments
        for _ in range(40):
            alive = {name for name, ref in refs.items() if ref() is not None}
            if alive <= DTLS:
                break
            await asyncio.sleep(0.1)
    finally:
        gc.enable()
    assert alive <= DTLS
    # aiortc's DTLS task may leave its transport in a cycle (see
    # miscord_client.rtc.close_peer_connection): then it must hold nothing else
    for name in alive:
        dtls = refs[name]()
        assert dtls is not None
        assert dtls._ssl is dtls._rx_srtp is dtls._tx_srtp is dtls._transport is None
        assert not dtls._rtp_router.receivers and not dtls._rtp_router.senders
