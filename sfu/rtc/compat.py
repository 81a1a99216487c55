"""The versions of aiortc, aioice and pylibsrtp whose internals ``sfu.rtc``
uses, checked at start: an upgrade fails loudly instead of silently degrading."""

from __future__ import annotations

import asyncio
import importlib.metadata

import aioice
import pylibsrtp
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport

from miscord_client.rtc import UnsupportedAiortc, private

from .peer import close_peer_connection, new_peer_connection

#: versions of the packages whose internals this package uses, as tested
TESTED = {"aiortc": ("1.16.0",), "aioice": ("0.13.0",), "pylibsrtp": ("1.0.0",)}

_REQUIRED: dict[type, tuple[str, ...]] = {
    RTCRtpReceiver: ("_handle_rtp_packet", "_send_rtcp", "receive", "_run_rtcp"),
    RTCRtpSender: ("_handle_rtcp_packet", "send", "stop", "getStats"),
    RTCDtlsTransport: (
        "_register_rtp_sender",
        "_unregister_rtp_sender",
        "_send_rtp",
        "_get_stats",
    ),
    aioice.Connection: (
        "recv",
        "sendto",
        "build_request",
        "query_consent",
        "get_component_candidates",
    ),
}


def installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in TESTED}


def check_compatibility(versions: dict[str, str] | None = None) -> None:
    """Refuse to run on a version of a package whose internals we use untested."""
    versions = versions or installed_versions()
    for name, tested in TESTED.items():
        if versions.get(name) not in tested:
            raise UnsupportedAiortc(
                f"{name} {versions.get(name)} is not a tested version (tested: "
                f"{', '.join(tested)}); sfu/rtc must be checked against it before use"
            )
    for cls, attrs in _REQUIRED.items():
        for attr in attrs:
            if not hasattr(cls, attr):
                raise UnsupportedAiortc(f"{cls.__name__}.{attr} is missing")


def _require(obj: object, attrs: tuple[str, ...], owner: str) -> None:
    for attr in attrs:
        if not hasattr(obj, attr):
            raise UnsupportedAiortc(f"{owner}.{attr} is missing")


async def selftest() -> None:
    """Check the private instance attributes ``sfu.rtc`` uses on a real
    (unconnected) peer connection; raises ``UnsupportedAiortc``."""
    pc = new_peer_connection()
    try:
        transceiver = pc.addTransceiver("audio", direction="sendonly")
        _require(transceiver, ("_codecs", "_headerExtensions"), "RTCRtpTransceiver")
        for name in ("remote_streams", "decoder_queue", "rtcp_ssrc", "rtcp_task"):
            private(transceiver.receiver, "RTCRtpReceiver", name)
        for name in ("rtp_task", "rtcp_task"):
            private(transceiver.sender, "RTCRtpSender", name)
        _require(transceiver.sender, ("_ssrc", "_rtx_ssrc"), "RTCRtpSender")
        dtls = transceiver.sender.transport
        for name in ("tx_bytes", "tx_packets", "rx_bytes", "rx_packets"):
            private(dtls, "RTCDtlsTransport", name)
        attrs = ("_tx_srtp", "_rx_srtp", "_stats_id", "_rtp_router", "_ssl", "_role")
        _require(dtls, (*attrs, "_rtp_header_extensions_map"), "RTCDtlsTransport")
        connection = dtls.transport._connection
        _require(
            connection,
            ("_nominated", "_protocols", "_queue", "_closing", "_transport_policy"),
            "aioice Connection",
        )
        ids = private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
        _require(ids, ("audio_level", "abs_send_time"), "HeaderExtensions")
        _require(pylibsrtp.Session(), ("_srtp",), "pylibsrtp.Session")
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        raw = getattr(udp, "_sock", None)
        udp.close()
        if raw is None or not hasattr(raw, "sendto"):
            raise UnsupportedAiortc("asyncio datagram transports have no _sock")
    finally:
        await close_peer_connection(pc)
