"""Helpers for screen-share tests."""

from __future__ import annotations

import time

from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket


class PublisherSpy:
    """On the *publisher's* (client) video sender: counts keyframe requests that
    reach it, and ignores REMB so aiortc's encoder keeps one bitrate (it would
    otherwise send a keyframe at every bitrate change and hide a missing PLI)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.requests: list[float] = []
        original = sender._handle_rtcp_packet

        async def handle(packet):
            if isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == RTCP_PSFB_APP:
                    return
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    self.requests.append(time.monotonic())
            await original(packet)

        sender._handle_rtcp_packet = handle

    def max_per_window(self, window: float) -> int:
        """The most requests seen within any ``window`` seconds."""
        best = 0
        for i, t in enumerate(self.requests):
            best = max(best, sum(1 for u in self.requests[i:] if u - t < window))
        return best


def prepare_screen_spy(client) -> callable:
    """A ``prepare`` hook for VoiceClient.publish that installs a PublisherSpy."""

    def prepare(pc):
        transceiver = client.published["screen"]
        if not hasattr(client, "screen_spy"):
            client.screen_spy = PublisherSpy(transceiver.sender)

    return prepare
