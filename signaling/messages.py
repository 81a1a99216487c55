"""The media core's records in the contract's shapes (``miscord_client.protocol``)."""

from __future__ import annotations

from miscord_client import protocol
from sfu.events import ParticipantView


def participant_info(view: ParticipantView) -> protocol.ParticipantInfo:
    return {
        "peer_id": view.peer_id,
        "user_id": view.user_id,
        "name": view.name,
        "tracks": [{"source": t.source, "muted": t.muted} for t in view.tracks],
    }


def track_info(tracks: dict[str, dict[str, str]]) -> dict[str, protocol.TrackInfo]:
    return {
        mid: {"peer_id": track["peer_id"], "source": track["source"]}
        for mid, track in tracks.items()
    }
