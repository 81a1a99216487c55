"""The lifecycle tracker: media-core events become each peer's timeline.

It only listens: the bus calls it synchronously, so it does no I/O.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sfu import events

from .records import PeerRecord
from .store import PeerStore

if TYPE_CHECKING:
    from sfu.server import SfuServer


class EventRecorder:
    def __init__(self, store: PeerStore, sfu: SfuServer, history: int) -> None:
        self.store = store
        self.sfu = sfu
        self.history = history

    def __call__(self, event: events.Event) -> None:
        now = time.time()
        if isinstance(event, events.ParticipantJoined):
            view = event.participant
            joined = PeerRecord(
                view.peer_id,
                view.user_id,
                view.name,
                event.channel_id,
                now,
                self.history,
            )
            self.store.add(joined)
            joined.add(now, "joined", channel=event.channel_id, user=view.user_id)
            return
        record = self.store.live.get(event.peer_id or "")
        if record is None:
            return
        match event:
            case events.ParticipantLeft(reason=reason):
                record.add(now, "left", reason=reason)
                self.store.depart(record.peer_id, reason, now)
            case events.StateChanged(state=state, previous=previous):
                record.state, record.state_since = state, now
                record.add(now, "state", state=state, previous=previous)
            case events.TransportChanged(pc=pc, layer=layer, state=state):
                record.add(now, layer, pc=pc, state=state)
            case events.SubscribeOffer(tracks=tracks):
                record.add(
                    now, "offer", pc="subscribe", by="server", tracks=len(tracks)
                )
            case events.Negotiated(pc=pc, offerer=offerer, seconds=seconds, ok=ok):
                detail: dict[str, Any] = {"pc": pc, "offerer": offerer}
                detail.update(seconds=seconds, ok=ok)
                if event.detail:
                    detail["error"] = event.detail[:200]
                record.add(now, "negotiated", **detail)
            case events.TrackPublished(source=source, codec=codec):
                record.add(now, "published", source=source, codec=codec)
                if source == "microphone":
                    record.mic_published_at = now
                    record.mic_muted = self._muted(record.peer_id)
                    record.mic_muted_since = now
            case events.TrackUnpublished(source=source):
                record.add(now, "unpublished", source=source)
                if source == "microphone":
                    record.mic_muted = record.mic_published_at = None
            case events.TrackMuted(source=source, muted=muted):
                record.add(now, "muted" if muted else "unmuted", source=source)
                if source == "microphone":
                    record.mic_muted, record.mic_muted_since = muted, now
            case events.Subscribed(publisher=publisher, source=source, mid=mid):
                record.add(
                    now, "subscribed", publisher=publisher, source=source, mid=mid
                )
            case events.Unsubscribed(publisher=publisher, source=source):
                record.add(now, "unsubscribed", publisher=publisher, source=source)
            case events.KeyframeRequested(source=source, requested_by=by, sent=sent):
                record.add(now, "keyframe_request", source=source, by=by, sent=sent)
            case events.MediaRestarted():
                record.add(now, "media_restarted")

    def note(self, peer_id: str, kind: str, **detail: Any) -> None:
        """Something signaling saw (an error sent, a socket lost, a resume)."""
        record = self.store.live.get(peer_id)
        if record is not None:
            record.add(time.time(), kind, **detail)

    def _muted(self, peer_id: str) -> bool:
        participant = self.sfu.participants.get(peer_id)
        pub = participant.publish.by_source("microphone") if participant else None
        return bool(pub and pub.muted)
