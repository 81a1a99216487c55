"""Audio levels from the RFC 6464 ``ssrc-audio-level`` header extension.

No decoding: the publisher's encoder already measured each packet's level (in
-dBov, 0 = loudest, 127 = silence) and put it in the RTP header; C sums it per
packet as it forwards. One meter per microphone publication feeds
active-speaker detection (every tick) and keeps a per-second history for the
diagnosis report.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

SILENCE = 127
#: -dBov at or under which a participant counts as speaking
SPEAKING_DBOV = 45
#: seconds a speaker stays "speaking" after the last loud packet
SPEAKING_HOLD = 0.6


@dataclass(frozen=True)
class LevelSecond:
    """One second of levels: loudest and mean in dBov (negative), packet count."""

    t: float
    max_dbov: float
    mean_dbov: float
    packets: int
    voice_packets: int


class AudioLevelMeter:
    """Levels of one publication. C counts each packet's level into the
    publication's ``struct fan_publication`` (``fan_publish``); ``tick`` reads and
    resets those sums."""

    def __init__(self, pub: Any, history_seconds: int = 300) -> None:
        self._pub = pub  # keeps the struct that ``_sums`` lies in alive
        pub.metered = 1
        pub.speaking_dbov = SPEAKING_DBOV
        self._sums = pub.levels
        self._sums.loudest = SILENCE
        self.history: deque[LevelSecond] = deque(maxlen=history_seconds)
        self._sec_loudest = SILENCE
        self._sec_start = time.time()
        self.current_dbov: float | None = None
        self.speaking_until = 0.0

    def tick(self, now: float) -> None:
        """Close the current tick: update the level and the speaking state."""
        sums = self._sums
        loudest = sums.loudest
        self.current_dbov = -float(loudest) if sums.tick_packets else None
        sums.tick_packets = 0
        sums.loudest = SILENCE
        if loudest <= SPEAKING_DBOV:
            self.speaking_until = now + SPEAKING_HOLD
        self._sec_loudest = min(self._sec_loudest, loudest)
        wall = time.time()
        if wall - self._sec_start >= 1.0:
            if sums.packets:
                self.history.append(
                    LevelSecond(
                        t=wall,
                        max_dbov=-float(self._sec_loudest),
                        mean_dbov=-sums.sum / sums.packets,
                        packets=sums.packets,
                        voice_packets=sums.voice,
                    )
                )
            self._sec_start = wall
            self._sec_loudest = SILENCE
            sums.sum = sums.packets = sums.voice = 0

    def speaking(self, now: float) -> bool:
        return now < self.speaking_until

    @property
    def linear(self) -> float:
        """The current level as a 0..1 amplitude (for ``speaking``)."""
        if self.current_dbov is None:
            return 0.0
        return round(10 ** (self.current_dbov / 20), 4)
