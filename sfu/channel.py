"""A voice channel: its participants and the publications they share."""

from __future__ import annotations

import time

from .errors import ChannelFull
from .events import EventBus, Speaking
from .participant import Participant
from .publication import Publication
from .settings import MediaSettings


class Channel:
    def __init__(
        self, channel_id: str, settings: MediaSettings, events: EventBus
    ) -> None:
        self.id = channel_id
        self.settings = settings
        self.events = events
        self.participants: dict[str, Participant] = {}
        self.created_at = time.time()
        self._speakers: set[str] = set()

    def publications(self) -> list[Publication]:
        return [
            pub
            for participant in self.participants.values()
            for pub in participant.publish.publications.values()
        ]

    def publications_changed(self) -> None:
        """Every participant receives every other participant's sources,
        unless its token lacks ``listen``: then its subscribe connection
        carries no media."""
        publications = self.publications()
        for participant in self.participants.values():
            participant.subscribe.want(
                [p for p in publications if p.peer_id != participant.peer_id]
                if "listen" in participant.can
                else []
            )

    def check_screen_allowed(self) -> None:
        screens = sum(1 for p in self.publications() if p.source == "screen")
        if screens >= self.settings.max_screens:
            raise ChannelFull(
                f"channel {self.id} already has {screens} shared screen(s), the most "
                "allowed"
            )

    def update_speakers(self, now: float) -> None:
        """Tick every microphone's level meter; announce speaker changes."""
        loud: list[tuple[str, float]] = []
        for pub in self.publications():
            if pub.levels is None:
                continue
            pub.levels.tick(now)
            if not pub.muted and pub.levels.speaking(now):
                loud.append((pub.peer_id, pub.levels.linear))
        loud.sort(key=lambda item: -item[1])
        speakers = {peer for peer, _ in loud}
        if speakers != self._speakers:
            self._speakers = speakers
            self.events.emit(Speaking(self.id, None, speakers=loud))
