"""A downlink: one m-line of a subscriber's subscribe connection and the
publication it carries.

A downlink carries one publication of another participant at a time: offered
to the subscriber (``pending``), then bound once its answer applies
(``publication``). When that publication ends the m-line goes inactive and is
reused by the next publication of its kind, so a long session's SDP stays as
large as the most it ever carried at once. How packets reach the subscriber is
the subclass's: ``FastDownlink`` (the fast path, C), ``TrackDownlink`` (aiortc's
senders) or ``RelayDownlink`` (the decode/re-encode baseline); ``MediaSettings
.forwarding`` picks one per server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from aiortc import RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket


class Downlink(ABC):
    """``bind`` and ``unbind`` start and stop forwarding (the publication calls
    them); ``publication`` names what the m-line carries until the subscriber
    releases it, ended or not."""

    def __init__(self, transceiver: RTCRtpTransceiver, kind: str, viewer: str) -> None:
        self.transceiver = transceiver
        self.kind = kind
        self.viewer = viewer  # the subscriber's peer id, for keyframe throttling
        #: bound: what it carries now; pending: offered, bound once answered
        self.publication: Any = None
        self.pending: Any = None
        #: the codec the m-line was last offered with
        self.codec: RTCRtpCodecParameters | None = None

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def carries(self) -> Any:
        """The publication offered or bound on this m-line, if any."""
        return self.pending or self.publication

    def _ask_keyframe(self) -> None:
        if self.publication is not None:
            self.publication.request_keyframe(self.viewer)

    @abstractmethod
    def bind(self, publication: Any) -> None: ...

    @abstractmethod
    def unbind(self) -> None: ...

    @abstractmethod
    def write(self, packet: RtpPacket) -> None: ...

    @abstractmethod
    def stats(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def close(self) -> None: ...
