"""The SDK's examples (examples/*.py), each run through its ``main`` against a real
server with real media over 127.0.0.1."""

import asyncio
import importlib.util
import struct
import wave
import zlib
from pathlib import Path
from types import ModuleType

import av
import numpy as np

from tests.media import ABSENT, HEARD, RATE, CounterScreen, read_counter, tone_share
from tests.voice import Ears, tone_participant

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    """Import examples/<name>.py (examples/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tone(path: Path, freq: float, seconds: float) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    samples = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (
            1,
            2,
            RATE,
        )
        data = wav.readframes(wav.getnframes())
    return np.frombuffer(data, np.int16).astype(np.float32) / 32768


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB PNG without row filters (what the example writes), checked
    chunk by chunk, as an (height, width, 3) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color, _, _, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, color, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()  # filter "none" on every row
    return rows[:, 1:].reshape(height, width, 3)


async def test_play_file_is_heard_until_the_file_ends(server, clients, tmp_path):
    play_file = example("play_file")
    path = tmp_path / "tone.wav"
    write_tone(path, 440, 3.0)
    listener = clients(server, "listener")
    await listener.join("room")
    ears = Ears(listener)
    token = server.token("bot", ["room"])
    # no ``seconds``: the bot leaves by itself when the file ends
    bot = asyncio.create_task(play_file.main(server.url, token, "room", str(path)))
    try:
        bot_id = await listener.wait_for(
            lambda: next(
                (
                    p
                    for p, info in listener.participants.items()
                    if info["user_id"] == "bot"
                ),
                None,
            )
        )
        await ears.hears(bot_id, 440, timeout=10)
        await asyncio.wait_for(bot, 30)
        await listener.wait_for(lambda: bot_id not in listener.participants)
    finally:
        bot.cancel()
        await ears.stop()


async def test_record_channel_writes_each_voice_to_its_own_file(
    server, clients, tmp_path
):
    record_channel = example("record_channel")
    tones = {"alice": 440, "bob": 660}
    alice = await tone_participant(clients, server, "alice", tones["alice"])
    token = server.token("recorder", ["room"])
    seconds = 5.0
    recording = asyncio.create_task(
        record_channel.main(server.url, token, "room", tmp_path / "rec", seconds)
    )
    try:
        # bob joins once the recorder is in: recorded as a newcomer
        await alice.wait_for(
            lambda: any(p["user_id"] == "recorder" for p in alice.participants.values())
        )
        bob = await tone_participant(clients, server, "bob", tones["bob"])
        files = await asyncio.wait_for(recording, 30)
    finally:
        recording.cancel()
    people = {"alice": alice, "bob": bob}
    assert set(files) == {alice.peer_id, bob.peer_id}
    for user, client in people.items():
        path = files[client.peer_id]
        assert path.parent == tmp_path / "rec" and path.name.startswith(f"{user}-")
        samples = read_wav(path)
        assert 0.5 <= len(samples) / RATE <= seconds + 1
        assert tone_share(samples, tones[user]) >= HEARD
        for other, freq in tones.items():
            if other != user:
                assert tone_share(samples, freq) < ABSENT


async def test_screen_viewer_saves_snapshots_of_the_share(server, clients, tmp_path):
    screen_viewer = example("screen_viewer")
    # the server takes a screen only beside a microphone (an audio m-line first)
    sharer = await tone_participant(clients, server, "sharer", 440)
    await sharer.publish(screen=CounterScreen())
    token = server.token("viewer", ["room"])
    files = await asyncio.wait_for(
        screen_viewer.main(
            server.url, token, "room", tmp_path / "shots", every=1, seconds=5
        ),
        30,
    )
    assert len(files) >= 2
    counters = []
    for path in files:
        assert path.name.startswith(f"sharer-{sharer.peer_id}-")
        rgb = read_png(path)
        assert rgb.shape == (360, 640, 3)
        counters.append(read_counter(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    # each snapshot a newer frame of the counter
    assert counters == sorted(counters) and counters[-1] > counters[0], counters
