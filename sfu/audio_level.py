"""Audio levels from the RFC 6464 ``ssrc-audio-level`` header extension.

No decoding: the publisher's encoder already measured each packet's level (in
-dBov, 0 = loudest, 127 = silence) and put it in the RTP header. One meter per
microphone publication feeds active-speaker detection (every tick) and keeps a
per-second history for the diagnosis report.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

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
    def __init__(self, history_seconds: int = 300) -> None:
        self.history: deque[LevelSecond] = deque(maxlen=history_seconds)
        self._loudest = SILENCE  # within the current tick
        self._tick_packets = 0
        self._sec_loudest = SILENCE
        self._sec_sum = 0
        self._sec_packets = 0
        self._sec_voice = 0
        self._sec_start = time.time()
        self.current_dbov: float | None = None
        self.speaking_until = 0.0

    def add(self, level: tuple[bool, int] | None) -> None:
        """Per packet (hot path): ``level`` as aiortc parsed it, (vad, -dBov)."""
        if level is None:
            return
        value = level[1]
        if value < self._loudest:
            self._loudest = value
        self._tick_packets += 1
        self._sec_sum += value
        self._sec_packets += 1
        if value <= SPEAKING_DBOV:
            self._sec_voice += 1

    def tick(self, now: float) -> None:
        """Close the current tick: update the level and the speaking state."""
        self.current_dbov = -float(self._loudest) if self._tick_packets else None
        self._tick_packets = 0
        if self._loudest <= SPEAKING_DBOV:
            self.speaking_until = now + SPEAKING_HOLD
        self._sec_loudest = min(self._sec_loudest, self._loudest)
        self._loudest = SILENCE
        wall = time.time()
        if wall - self._sec_start >= 1.0:
            if self._sec_packets:
                self.history.append(
                    LevelSecond(
                        t=wall,
                        max_dbov=-float(self._sec_loudest),
                        mean_dbov=-self._sec_sum / self._sec_packets,
                        packets=self._sec_packets,
                        voice_packets=self._sec_voice,
                    )
                )
            self._sec_start = wall
            self._sec_loudest = SILENCE
            self._sec_sum = self._sec_packets = self._sec_voice = 0

    def speaking(self, now: float) -> bool:
        return now < self.speaking_until

    @property
    def linear(self) -> float:
        """The current level as a 0..1 amplitude (for ``speaking``)."""
        if self.current_dbov is None:
            return 0.0
        return round(10 ** (self.current_dbov / 20), 4)
