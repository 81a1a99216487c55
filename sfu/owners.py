"""What the children of a participant need of it, as protocols: a child knows
its owner through these (and weakly, ``refs.owner``), never by importing the
owner's module, so imports only point down the tree."""

from __future__ import annotations

from typing import Protocol

from aiortc import RTCPeerConnection

from .events import Event
from .rtc.ice import ServerIcePolicy
from .settings import MediaSettings
from .tasks import TaskGroup


class PeerOwner(Protocol):
    """A participant as its publications see it."""

    peer_id: str
    channel_id: str
    settings: MediaSettings
    tasks: TaskGroup
    closed: bool

    def emit(self, event: Event) -> None: ...


class ConnectionOwner(PeerOwner, Protocol):
    """A participant as its publish and subscribe connections see it."""

    #: where its peer connections gather (``MediaSettings.ice`` at its ports)
    ice: ServerIcePolicy

    def watch_pc(self, name: str, pc: RTCPeerConnection) -> None: ...

    def watch_dtls(self, name: str, pc: RTCPeerConnection) -> None: ...
