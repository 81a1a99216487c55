"""Settings of the media core (the signaling layer fills them from its config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .rtc.ice import ServerIcePolicy
from .rtc.ports import PortRange


@dataclass
class MediaSettings:
    #: addresses ICE gathers host candidates on and announces; empty = aioice's own
    ice_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    #: the address every server candidate names instead of the bound one
    announced_ip: str | None = None
    #: the UDP ports media sockets bind to (None: any the system gives)
    rtc_ports: PortRange | None = None
    max_participants: int = 99
    max_channels: int = 1000
    max_screens: int = 2
    #: seconds media may stay failed/disconnected before the peer is removed
    media_grace: float = 10.0
    #: seconds without any packet from a connected peer before it counts disconnected
    media_silence: float = 4.0
    #: seconds a peer connection may stay connecting before it counts failed
    connect_timeout: float = 20.0
    #: seconds between ICE consent checks (RFC 7675) of a quiet peer (one whose
    #: packets show it alive is checked every 5 s); a dead peer fails after 6 misses
    consent_interval: float = 1.0
    #: least seconds between two keyframe requests sent to one publisher
    keyframe_interval: float = 1.0
    #: seconds a client has to answer a subscribe offer before it is re-offered
    offer_timeout: float = 15.0
    #: "fast" (packet fan-out), "track" (aiortc senders) or "relay" (decode+encode)
    forwarding: str = "fast"

    @cached_property
    def ice(self) -> ServerIcePolicy:
        """Where the server's peer connections gather, and their consent checks."""
        return ServerIcePolicy(
            hosts=tuple(self.ice_hosts),
            consent_interval=self.consent_interval,
            announced=self.announced_ip,
        )
