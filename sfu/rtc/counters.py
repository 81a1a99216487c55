"""aiortc's transport counters (W3C ``transport`` stats) kept true for what
goes past aiortc's transport: the fast path reads and writes the sockets itself."""

from __future__ import annotations

from aiortc.rtcdtlstransport import RTCDtlsTransport


def count_rx(dtls: RTCDtlsTransport, packets: int, octets: int) -> None:
    dtls._RTCDtlsTransport__rx_packets += packets  # type: ignore[attr-defined]
    dtls._RTCDtlsTransport__rx_bytes += octets  # type: ignore[attr-defined]


def count_tx(dtls: RTCDtlsTransport, packets: int, octets: int) -> None:
    dtls._RTCDtlsTransport__tx_packets += packets  # type: ignore[attr-defined]
    dtls._RTCDtlsTransport__tx_bytes += octets  # type: ignore[attr-defined]
