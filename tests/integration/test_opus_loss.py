"""Opus on lossy networks (contract 1.1): the FEC and DTX a publisher's offer
asks for stay in the server's answers (renegotiations too), the server's
subscribe offers ask for FEC, and a sender in DTX is not counted as loss.

The publishers are aiortc peers; one writes Opus's fmtp into its offers the
way browsers do (``VoiceClient(opus_fmtp=...)``), which aiortc alone does not.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import av
from aiortc import MediaStreamTrack, sdp

from miscord_client.load.media import encode_tone
from tests.diag_call import (
    assert_consistent,
    connected,
    diag_server,
    found,
    report,
    row,
    summary,
)
from tests.media import FRAME, RATE, CounterScreen, ToneTrack
from tests.voice import Ears

#: an Opus packet of silence (a 20 ms CELT frame with no energy): a DTX update
SILENCE = bytes([0xF8, 0xFF, 0xFE])
BROWSER_FMTP = {"minptime": 10, "useinbandfec": 1, "usedtx": 1}


def opus_parameters(text: str) -> list[dict[str, Any]]:
    """The Opus fmtp parameters of each audio m-line of ``text`` (aiortc's
    parser leaves the last one a string)."""
    return [
        {k: int(v) for k, v in codec.parameters.items()}
        for media in sdp.SessionDescription.parse(text).media
        for codec in media.rtp.codecs
        if codec.mimeType.lower() == "audio/opus"
    ]


async def test_fec_and_dtx_are_kept_and_subscribe_offers_ask_for_fec(server, clients):
    alice = clients(server, "alice", opus_fmtp=BROWSER_FMTP)
    bob = clients(server, "bob")
    for client in (alice, bob):
        await client.join("room")
    await alice.publish(microphone=ToneTrack(440))
    await bob.publish(microphone=ToneTrack(660))
    assert alice.publish_pc is not None and bob.publish_pc is not None
    answer = alice.publish_pc.remoteDescription.sdp
    assert opus_parameters(answer) == [{"useinbandfec": 1, "usedtx": 1}], answer
    # bob's offer asked for neither: his answer forces nothing on his encoder
    assert opus_parameters(bob.publish_pc.remoteDescription.sdp) == [{}]
    ears = Ears(bob)
    assert await ears.hears(alice.peer_id, 440)
    assert bob.subscribe_pc is not None
    offer = bob.subscribe_pc.remoteDescription.sdp
    assert opus_parameters(offer) == [{"useinbandfec": 1}], offer

    # a renegotiation (a screen added) keeps them: aiortc negotiates afresh
    await alice.publish(screen=CounterScreen())
    answer = alice.publish_pc.remoteDescription.sdp
    assert opus_parameters(answer) == [{"useinbandfec": 1, "usedtx": 1}], answer
    await bob.wait_for(lambda: len(bob.remote) == 2)
    offer = bob.subscribe_pc.remoteDescription.sdp
    assert opus_parameters(offer) == [{"useinbandfec": 1}], offer
    assert await ears.hears(alice.peer_id, 440)
    await ears.stop()


class DtxSender(MediaStreamTrack):
    """Real Opus as a sender in DTX sends it: a tone for ``talk`` seconds,
    then one small packet every 400 ms for ``quiet`` seconds; sequence numbers
    consecutive, RTP timestamps advancing with time (aiortc packs packets as
    given, where its encoder would number decoded frames without the gaps)."""

    kind = "audio"

    def __init__(self, talk: float = 1.0, quiet: float = 2.0) -> None:
        super().__init__()
        self.talk, self.quiet = talk, quiet
        self.speech = encode_tone(440, talk)
        self.frames = 0
        self._slot = 0  # 20 ms slots since the start
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        cycle = round((self.talk + self.quiet) * 50)
        at = self._slot % cycle
        quiet = at >= self.talk * 50
        if quiet:  # the next DTX update: on a 400 ms step of the quiet part
            self._slot += 20 - (at - round(self.talk * 50)) % 20
        wait = self._start + self._slot * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        data = SILENCE if quiet else self.speech[at % len(self.speech)]
        packet = av.Packet(data)
        packet.pts = self._slot * FRAME
        packet.time_base = fractions.Fraction(1, RATE)
        self._slot += 1
        self.frames += 1
        return packet


async def test_a_sender_in_dtx_is_not_counted_as_loss(start_server, clients):
    server = await diag_server(start_server)
    alice, bob = clients(server, "alice"), clients(server, "bob")
    for client in (alice, bob):
        await client.join("room")
        client.start_stats(1.0)
    tone = DtxSender()
    await alice.publish(microphone=tone)
    await bob.publish(microphone=ToneTrack(660))
    await connected(server, alice, bob)
    started = tone.frames
    await asyncio.sleep(6.0)  # two talk/quiet cycles, more than a window
    # DTX halves what a continuous sender would send in these 6 s (~300 frames)
    assert tone.frames - started < 180, tone.frames - started
    sender, listener = (
        await report(server, alice.peer_id),
        await report(server, bob.peer_id),
    )
    for body, side in ((sender, "uplink"), (listener, "downlink")):
        assert (f"{side}_loss", side) not in found(body), summary(body)
        assert (body[side]["loss_pct"] or 0.0) < 1.0, summary(body)
        assert ("delay_variation", side) not in found(body), summary(body)
        assert_consistent(body)
    row("DTX-like sparse sending", sender)
