"""Voice with participants in other processes: no codec in the server's process,
and a participant whose process dies is removed in time."""

import asyncio
import gc
import json
import sys
import time

import aiortc.codecs.opus
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

from tests.voice import settle


class Spy:
    """Counts calls to aiortc's codec factories in this (the server's) process."""

    def __init__(self, module, name):
        self.module, self.name, self.calls = module, name, 0
        self.original = getattr(module, name)

        def counting(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        setattr(module, name, counting)

    def restore(self):
        setattr(self.module, self.name, self.original)


async def start_tone_client(server, user, freq, channel="room"):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tone_client",
        server.url,
        server.token(user),
        channel,
        str(freq),
        stdout=asyncio.subprocess.PIPE,
    )
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    proc.peer_id = json.loads(line)["joined"]
    return proc


async def heard(proc, peer_id, freq, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout))
        if report.get("heard", {}).get(peer_id, {}).get(str(float(freq)), 0) >= 0.5:
            return True
    return False


async def stop(*procs):
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_no_codec_runs_in_the_server_while_forwarding(server):
    spies = [
        Spy(aiortc.rtcrtpreceiver, "get_decoder"),
        Spy(aiortc.rtcrtpsender, "get_encoder"),
    ]
    procs = []
    try:
        procs = [
            await start_tone_client(server, u, f)
            for u, f in (("alice", 440), ("bob", 660), ("carol", 880))
        ]
        for listener in procs:
            for speaker, freq in zip(procs, (440, 660, 880), strict=True):
                if speaker is not listener:
                    assert await heard(listener, speaker.peer_id, freq)

        def forwarded() -> int:
            return sum(
                p.publish.by_source("microphone").forwarded
                for p in server.services.sfu.participants.values()
            )

        await settle(lambda: forwarded() > 500)  # a few seconds of it
        gc.collect()
        codecs = [
            o
            for o in gc.get_objects()
            if isinstance(
                o,
                (
                    aiortc.codecs.opus.OpusDecoder,
                    aiortc.codecs.opus.OpusEncoder,
                    aiortc.codecs.vpx.Vp8Decoder,
                    aiortc.codecs.vpx.Vp8Encoder,
                ),
            )
        ]
        assert codecs == []
        assert [s.calls for s in spies] == [0, 0]
    finally:
        for spy in spies:
            spy.restore()
        await stop(*procs)


async def test_killed_client_process_is_removed_within_grace(start_server, sockets):
    """Socket and media gone at once: kept for a resume, then ``timeout``."""
    server = await start_server(resume_grace=2.0)
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"), kind="events")
    proc = await start_tone_client(server, "doomed", 440)
    try:
        await watcher.expect("track_published")
        proc.kill()  # SIGKILL: no leave, no close frame
        killed_at = time.monotonic()
        left = await watcher.expect("participant_left", timeout=10)
        assert left == {
            "type": "participant_left",
            "peer_id": proc.peer_id,
            "reason": "timeout",
        }
        assert 2.0 < time.monotonic() - killed_at < 3.5
        assert proc.peer_id not in server.services.sfu.participants
    finally:
        await stop(proc)
