"""What the media core tells the outside world: typed events on one bus.

Signaling turns them into protocol messages; diagnostics turns them into
timelines. Listeners run synchronously in the emitting call and must not block;
one failing listener never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("miscord.debug")


@dataclass(frozen=True)
class TrackView:
    source: str
    muted: bool


@dataclass(frozen=True)
class ParticipantView:
    """A participant as the contract describes it."""

    peer_id: str
    user_id: str
    name: str
    tracks: list[TrackView] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    channel_id: str
    peer_id: str | None


@dataclass(frozen=True)
class ParticipantJoined(Event):
    participant: ParticipantView


@dataclass(frozen=True)
class ParticipantLeft(Event):
    user_id: str
    reason: str


@dataclass(frozen=True)
class MediaTimedOut(Event):
    """A participant's media stayed ``state`` (failed, disconnected) past the
    grace: its owner should end it (``SfuServer.leave``, reason timeout)."""

    state: str


@dataclass(frozen=True)
class MediaRestarted(Event):
    """A participant's client brought new peer connections (a resume with
    ``media: restart``); its publications go on."""


@dataclass(frozen=True)
class TrackPublished(Event):
    source: str
    kind: str
    codec: str


@dataclass(frozen=True)
class TrackUnpublished(Event):
    source: str


@dataclass(frozen=True)
class TrackMuted(Event):
    source: str
    muted: bool
    #: "user" (its own mute) or "server" (an admin's)
    by: str = "user"


@dataclass(frozen=True)
class Speaking(Event):
    """Active speakers of a channel changed: (peer_id, level 0..1), loudest first."""

    speakers: list[tuple[str, float]]


@dataclass(frozen=True)
class SubscribeOffer(Event):
    """An offer the participant ``peer_id`` must answer on its subscribe pc."""

    sdp: str
    tracks: dict[str, dict[str, str]]


@dataclass(frozen=True)
class StateChanged(Event):
    """A participant's lifecycle state (joining ... closed) changed."""

    state: str
    previous: str


@dataclass(frozen=True)
class TransportChanged(Event):
    """An ICE, DTLS or connection state of one of a participant's pcs changed."""

    pc: str
    layer: str
    state: str


@dataclass(frozen=True)
class Negotiated(Event):
    """An offer/answer exchange finished (or failed) on ``pc``."""

    pc: str
    offerer: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Subscribed(Event):
    publisher: str
    source: str
    mid: str


@dataclass(frozen=True)
class Unsubscribed(Event):
    publisher: str
    source: str


@dataclass(frozen=True)
class KeyframeRequested(Event):
    """``requested_by`` asked for a keyframe of ``peer_id``'s ``source``;
    ``sent`` says whether a PLI went out now (False: coalesced/throttled)."""

    source: str
    requested_by: str
    sent: bool


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", type(event).__name__)
