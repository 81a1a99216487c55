"""Media-core events as protocol messages, to the right sockets.

The media core reports (``sfu.events``); this turns each report into the
contract's message for the channel, or, for a participant whose media timed
out, into the end of that participant (``ConnectionManager.end``).
"""

from __future__ import annotations

from miscord_client import protocol
from sfu import events

from .connections import TIMEOUT, Connection, ConnectionManager
from .messages import participant_info, track_info


class EventRouter:
    def __init__(self, manager: ConnectionManager) -> None:
        self.manager = manager

    def __call__(self, event: events.Event) -> None:
        manager = self.manager
        origin = manager.by_peer.get(event.peer_id) if event.peer_id else None
        match event:
            case events.ParticipantJoined(participant=participant):
                joined: protocol.ParticipantJoined = {
                    "type": "participant_joined",
                    "participant": participant_info(participant),
                }
                self._broadcast(event, joined, origin)
            case events.ParticipantLeft(reason=reason):
                left: protocol.ParticipantLeft = {
                    "type": "participant_left",
                    "peer_id": event.peer_id or "",
                    "reason": reason,
                }
                self._broadcast(event, left, origin)
            case events.MediaTimedOut() if origin is not None:
                ended = manager.end(
                    origin, TIMEOUT, protocol.Close.TIMEOUT, "media timed out"
                )
                manager.tasks.spawn(ended, "media-timeout")
            case events.TrackPublished(source=source):
                published: protocol.TrackPublished = {
                    "type": "track_published",
                    "peer_id": event.peer_id or "",
                    "source": source,
                }
                self._broadcast(event, published, origin)
            case events.TrackUnpublished(source=source):
                unpublished: protocol.TrackUnpublished = {
                    "type": "track_unpublished",
                    "peer_id": event.peer_id or "",
                    "source": source,
                }
                self._broadcast(event, unpublished, origin)
            case events.TrackMuted(source=source, muted=muted, by=by):
                mute: protocol.TrackMuted = {
                    "type": "track_muted",
                    "peer_id": event.peer_id or "",
                    "source": source,
                    "muted": muted,
                }
                if by == "server":  # the peer is told too: it did not ask
                    mute["by"] = "server"
                    origin = None
                self._broadcast(event, mute, origin)
            case events.Speaking(speakers=speakers):
                speaking: protocol.Speaking = {
                    "type": "speaking",
                    "speakers": [
                        {"peer_id": peer, "level": level} for peer, level in speakers
                    ],
                }
                self._broadcast(event, speaking, None)
            case events.SubscribeOffer(sdp=sdp, tracks=tracks) if origin is not None:
                offer: protocol.Offer = {
                    "type": "offer",
                    "pc": "subscribe",
                    "sdp": sdp,
                    "tracks": track_info(tracks),
                }
                manager.send(origin, offer)

    def _broadcast(
        self,
        event: events.Event,
        message: protocol.ServerMessage,
        origin: Connection | None,
    ) -> None:
        self.manager.broadcast(event.channel_id, message, exclude=origin)
