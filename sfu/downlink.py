"""What a publication's packets go to for one subscriber m-line: the fast path's
``FanoutSender``, the track path's ``TrackSender`` or the MediaRelay baseline's
``RelaySender`` (``MediaSettings.forwarding`` picks one per server)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from aiortc.rtp import RtpPacket


class Downlink(ABC):
    def __init__(self, kind: str, viewer: str) -> None:
        self.kind = kind
        self.viewer = viewer  # the subscriber's peer id, for keyframe throttling
        self.publication: Any = None
        self.mid: str | None = None

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
