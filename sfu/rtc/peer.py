"""The server's peer connections: made with no STUN server and one bundled
transport, taken apart with every hook ``sfu.rtc`` put on them, and answered
with one codec per m-line."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from miscord_client import rtc

#: what ``outbound.SendHook`` puts on a sender (the receive side's are
#: ``RawReceiver.HOOKS``)
SENDER_HOOKS = ("send", "stop", "getStats", "_handle_rtcp_packet")


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection with no STUN server (the server's addresses are its
    own) and one bundled transport."""
    return rtc.new_peer_connection()


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` and cut every cycle through it (``rtc.close_peer_connection``)."""
    await rtc.close_peer_connection(pc, SENDER_HOOKS)


def restrict_codecs(
    transceiver: RTCRtpTransceiver, keep: RTCRtpCodecParameters
) -> None:
    """Answer with one codec (and its RTX) so the publisher sends only that
    one, with ``keep``'s parameters (Opus: the FEC and DTX the offer asked for)."""
    transceiver._codecs = [
        c
        for c in transceiver._codecs
        if c.payloadType == keep.payloadType
        or (is_rtx(c) and c.parameters.get("apt") == keep.payloadType)
    ]
    for codec in transceiver._codecs:
        if codec.payloadType == keep.payloadType:
            codec.parameters = dict(keep.parameters)
