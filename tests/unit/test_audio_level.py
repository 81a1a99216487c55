"""``sfu.audio_level.AudioLevelMeter`` over a real ``struct fan_publication``:
packets go through C's ``fan_publish`` with their RFC 6464 level byte, and the
meter's ``tick`` reads the current level, the speaking state (with its hold),
the per-second history (on a fake wall clock) and ``linear``."""

from __future__ import annotations

import types

import pytest

from sfu import audio_level
from sfu.audio_level import (
    SILENCE,
    SPEAKING_DBOV,
    SPEAKING_HOLD,
    AudioLevelMeter,
    LevelSecond,
)
from sfu.native import ffi, lib

SSRC = 0x1234


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    wall = Wall()
    monkeypatch.setattr(audio_level, "time", types.SimpleNamespace(time=wall.time))
    return wall


class Publication:
    """A C publication and the packets sent into it."""

    def __init__(self) -> None:
        self.pub = ffi.gc(lib.fan_publication_new(), lib.fan_publication_free)
        self.seq = 0

    def send(self, *levels: int, voice: bool = False) -> None:
        for dbov in levels:
            level = dbov if dbov < 0 else (int(voice) << 7) | dbov
            payload = b"\xf8" + bytes(40)
            flags = lib.fan_publish(
                self.pub,
                payload,
                len(payload),
                0,
                self.seq,
                self.seq * 960,
                SSRC,
                level,
            )
            assert not flags & lib.FAN_DROP, "packet dropped"
            self.seq += 1


@pytest.fixture
def source() -> Publication:
    return Publication()


@pytest.fixture
def meter(source: Publication, wall: Wall) -> AudioLevelMeter:
    return AudioLevelMeter(source.pub)


def test_meter_turns_metering_on(source: Publication, wall: Wall):
    assert source.pub.metered == 0
    AudioLevelMeter(source.pub)
    assert (source.pub.metered, source.pub.speaking_dbov) == (1, SPEAKING_DBOV)
    assert source.pub.levels.loudest == SILENCE


def test_unmetered_publication_counts_no_levels(source: Publication):
    source.send(10, 20)
    assert source.pub.levels.packets == 0


def test_no_packets_no_level(meter: AudioLevelMeter):
    meter.tick(10.0)
    assert meter.current_dbov is None
    assert meter.linear == 0.0
    assert not meter.speaking(10.0)


def test_current_level_is_the_loudest_of_the_tick(meter, source):
    source.send(60, 30, 50)
    meter.tick(10.0)
    assert meter.current_dbov == -30.0


def test_voice_bit_is_not_part_of_the_level(meter, source):
    source.send(20, voice=True)
    meter.tick(10.0)
    assert meter.current_dbov == -20.0


def test_packets_without_level_are_not_counted(meter, source):
    source.send(-1, -1)
    meter.tick(10.0)
    assert meter.current_dbov is None


def test_tick_resets_the_level(meter, source):
    source.send(12)
    meter.tick(10.0)
    meter.tick(10.05)
    assert meter.current_dbov is None


def test_each_tick_has_its_own_loudest(meter, source):
    source.send(10)
    meter.tick(10.0)
    source.send(70)
    meter.tick(10.05)
    assert meter.current_dbov == -70.0


def test_silence_level(meter, source):
    source.send(SILENCE)
    meter.tick(10.0)
    assert meter.current_dbov == -127.0
    assert not meter.speaking(10.0)


# --- speaking ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dbov", "speaking"), [(0, True), (SPEAKING_DBOV, True), (SPEAKING_DBOV + 1, False)]
)
def test_speaking_threshold(meter, source, dbov, speaking):
    source.send(dbov)
    meter.tick(10.0)
    assert meter.speaking(10.0) is speaking


def test_speaking_holds_after_the_last_loud_tick(meter, source):
    source.send(20)
    meter.tick(10.0)
    meter.tick(10.1)  # nothing new
    assert meter.speaking(10.0 + SPEAKING_HOLD - 0.01)
    assert not meter.speaking(10.0 + SPEAKING_HOLD + 0.01)


def test_quiet_tick_does_not_extend_the_hold(meter, source):
    source.send(20)
    meter.tick(10.0)
    source.send(90)
    meter.tick(10.5)
    assert meter.speaking_until == pytest.approx(10.0 + SPEAKING_HOLD)


def test_loud_tick_extends_the_hold(meter, source):
    source.send(20)
    meter.tick(10.0)
    source.send(30)
    meter.tick(10.5)
    assert meter.speaking(10.5 + SPEAKING_HOLD - 0.01)


# --- per-second history -----------------------------------------------------------


def test_history_records_a_second(meter, source, wall):
    source.send(20, 40, 60, voice=False)
    meter.tick(1.0)
    wall.now += 1.0
    meter.tick(2.0)
    assert list(meter.history) == [
        LevelSecond(
            t=wall.now, max_dbov=-20.0, mean_dbov=-40.0, packets=3, voice_packets=2
        )
    ]


def test_history_max_spans_the_ticks_of_the_second(meter, source, wall):
    source.send(50)
    meter.tick(1.0)
    source.send(10)
    meter.tick(1.1)
    source.send(90)
    wall.now += 1.0
    meter.tick(2.0)
    (second,) = meter.history
    assert second.max_dbov == -10.0
    assert second.mean_dbov == pytest.approx(-50.0)
    assert second.packets == 3


def test_no_history_before_a_second_passes(meter, source, wall):
    source.send(20)
    wall.now += 0.99
    meter.tick(1.0)
    assert len(meter.history) == 0


def test_silent_second_adds_no_history(meter, wall):
    wall.now += 1.5
    meter.tick(1.0)
    assert len(meter.history) == 0


def test_history_sums_reset_each_second(meter, source, wall):
    source.send(20, 20)
    wall.now += 1.0
    meter.tick(1.0)
    source.send(80)
    wall.now += 1.0
    meter.tick(2.0)
    first, second = meter.history
    assert (first.packets, first.max_dbov) == (2, -20.0)
    assert (second.packets, second.max_dbov, second.mean_dbov) == (1, -80.0, -80.0)
    assert second.voice_packets == 0


def test_history_keeps_the_newest_seconds(source, wall):
    meter = AudioLevelMeter(source.pub, history_seconds=2)
    for dbov in (10, 20, 30):
        source.send(dbov)
        wall.now += 1.0
        meter.tick(wall.now)
    assert [s.max_dbov for s in meter.history] == [-20.0, -30.0]


# --- linear -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dbov", "linear"), [(0, 1.0), (20, 0.1), (6, 0.5012), (40, 0.01), (127, 0.0)]
)
def test_linear(meter, source, dbov, linear):
    source.send(dbov)
    meter.tick(1.0)
    assert meter.linear == linear
