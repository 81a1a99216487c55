"""A load run's client process: synthetic participants that publish stamped
audio (and screens) and count what they receive, answering the coordinator's
commands on stdin (``python -m miscord_client.load.worker``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiortc.rtp import RtpPacket

from ..client import RemoteTrack, VoiceClient
from .media import Counter, StampedAudio, StampedScreen, read_stamp
from .report import JoinRecord
from .scenario import NEVER, RECENT_STAMPS, Spec

# --- the worker process -------------------------------------------------------------


@dataclass
class StampCount:
    """Packets counted by the time their publisher stamped them. A worker learns
    a window's end a moment late, after it may have counted packets stamped
    past it; the recent stamps are kept so that those can be taken back."""

    count: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STAMPS))

    def add(self, stamp: float) -> None:
        self.count += 1
        self.recent.append(stamp)

    def end(self, end: float) -> None:
        kept = [s for s in self.recent if s < end]
        self.count -= len(self.recent) - len(kept)
        self.recent = deque(kept, maxlen=RECENT_STAMPS)


@dataclass
class StreamWindow:
    """Audio packets of one subscription stamped inside the window."""

    stamps: StampCount = field(default_factory=StampCount)
    first_stamp: float | None = None
    last_stamp: float = 0.0
    last_arrival: float | None = None
    max_gap: float = 0.0

    @property
    def received(self) -> int:
        return self.stamps.count

    def add(self, sent: float, now: float) -> None:
        self.stamps.add(sent)
        if self.first_stamp is None:
            self.first_stamp = sent
        self.last_stamp = max(self.last_stamp, sent)
        if self.last_arrival is not None:
            self.max_gap = max(self.max_gap, now - self.last_arrival)
        self.last_arrival = now

    def end(self, end: float) -> None:
        self.stamps.end(end)
        self.last_stamp = max(self.stamps.recent, default=self.first_stamp or 0.0)

    def gap(self, start: float, end: float) -> float:
        """The longest silence, including a late start or an early stop."""
        if self.first_stamp is None:
            return end - start
        return max(self.max_gap, self.first_stamp - start, end - self.last_stamp)


class WindowSink:
    """A ``raw_sink`` for VoiceClient: the loadclient ``Counter`` (streams,
    latency, video loss by sequence numbers) plus, for audio, what arrived of
    the packets stamped inside the window."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.window = NEVER
        self.audio: dict[str, StreamWindow] = {}  # by publisher peer id
        self._read_stamp = read_stamp

    def __call__(self, remote: RemoteTrack, packet: RtpPacket) -> None:
        self.counter(remote, packet)
        if remote.source != "microphone":
            return
        sent = self._read_stamp(packet.payload)
        if sent is None or not self.window[0] <= sent < self.window[1]:
            return
        stream = self.audio.get(remote.peer_id)
        if stream is None:
            stream = self.audio[remote.peer_id] = StreamWindow()
        stream.add(sent, time.time())

    def counts(self) -> tuple[int, int]:
        """(audio, screen) streams received so far."""
        sources = [source for _, source in self.counter.streams]
        return sources.count("microphone"), sources.count("screen")


class SendTally:
    """Counts the packets a ``StampedAudio`` stamps inside the window, by
    wrapping its ``recv`` (each call becomes one RTP packet)."""

    def __init__(self, track: Any) -> None:
        self.window = NEVER
        self.stamps = StampCount()
        self._recv = track.recv
        self._read_stamp = read_stamp
        track.recv = self._recv_counted

    async def _recv_counted(self) -> Any:
        packet = await self._recv()
        sent = self._read_stamp(bytes(packet))
        if sent is not None and self.window[0] <= sent < self.window[1]:
            self.stamps.add(sent)
        return packet


@dataclass
class Member:
    """A participant inside a worker process."""

    spec: Spec
    client: VoiceClient
    sink: WindowSink
    tally: SendTally | None = None


class LoadWorker:
    """The participants of one client process and the commands it answers."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.window = NEVER

    async def join(self, cmd: dict[str, Any]) -> dict[str, Any]:
        semaphore = asyncio.Semaphore(cmd["concurrency"])

        async def one(spec: Spec) -> JoinRecord:
            async with semaphore:
                return await self._join_one(spec, cmd)

        specs = [Spec(**p) for p in cmd["participants"]]
        records = await asyncio.gather(*(one(s) for s in specs))
        return {"joined": [asdict(r) for r in records]}

    async def _join_one(self, spec: Spec, cmd: dict[str, Any]) -> JoinRecord:
        sink = WindowSink(Counter(latency_every=cmd["latency_every"]))
        client = VoiceClient(cmd["url"], spec.token, cmd["ice_hosts"], raw_sink=sink)
        member = Member(spec, client, sink)
        record = JoinRecord(spec.user, spec.channel, None, None, None)
        started = time.monotonic()
        try:
            async with asyncio.timeout(cmd["timeout"]):
                joined = await client.join(spec.channel)
                record.peer_id = joined["peer_id"]
                record.join_ms = 1000 * (time.monotonic() - started)
                if spec.microphone or spec.screen:
                    microphone = StampedAudio() if spec.microphone else None
                    if microphone is not None:
                        member.tally = SendTally(microphone)
                    screen = (
                        StampedScreen(bitrate=cmd["screen_kbps"] * 1000)
                        if spec.screen
                        else None
                    )
                    published = time.monotonic()
                    await client.publish(microphone=microphone, screen=screen)
                    record.publish_ms = 1000 * (time.monotonic() - published)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:300]
            await client.close()
            return record
        self.members.append(member)
        return record

    def streams(self) -> dict[str, Any]:
        return {"streams": {m.spec.user: m.sink.counts() for m in self.members}}

    def open_window(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._set_window(cmd["start"], cmd["end"])
        for m in self.members:
            m.sink.audio.clear()
            if m.tally is not None:
                m.tally.stamps = StampCount()
        # sequence-number counts and latencies start with the window too
        delay = max(0.0, cmd["start"] - time.time())
        for m in self.members:
            asyncio.get_running_loop().call_later(delay, m.sink.counter.reset)
        return {"ok": True}

    def end_window(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._set_window(self.window[0], cmd["end"])
        for m in self.members:
            for stream in m.sink.audio.values():
                stream.end(cmd["end"])
            if m.tally is not None:
                m.tally.stamps.end(cmd["end"])
        return {"ok": True}

    def _set_window(self, start: float, end: float) -> None:
        self.window = (start, end)
        for m in self.members:
            m.sink.window = self.window
            if m.tally is not None:
                m.tally.window = self.window

    def progress(self) -> dict[str, Any]:
        return {
            "sent": self._sent(),
            "received": sum(
                s.received for m in self.members for s in m.sink.audio.values()
            ),
        }

    def _sent(self) -> dict[str, int]:
        return {
            m.client.peer_id: m.tally.stamps.count
            for m in self.members
            if m.tally is not None and m.client.peer_id
        }

    def report(self) -> dict[str, Any]:
        start, end = self.window
        counted = max(1e-3, time.time() - start)
        streams: list[dict[str, Any]] = []
        latencies: list[float] = []
        for m in self.members:
            for (publisher, source), count in m.sink.counter.streams.items():
                record = {
                    "listener": m.client.peer_id,
                    "publisher": publisher,
                    "source": source,
                    "kbps": count.bytes * 8 / 1000 / counted,
                }
                if source == "microphone":
                    window = m.sink.audio.get(publisher, StreamWindow())
                    record.update(
                        received=window.received,
                        max_gap_ms=1000 * window.gap(start, end),
                    )
                    latencies.extend(1000 * x for x in count.latencies)
                else:
                    record.update(received=count.packets, expected=count.expected)
                streams.append(record)
        return {"sent": self._sent(), "streams": streams, "latencies_ms": latencies}

    async def leave(self, cmd: dict[str, Any]) -> dict[str, Any]:
        async def one(member: Member) -> None:
            try:
                async with asyncio.timeout(cmd["timeout"]):
                    await member.client.leave()
            except Exception:
                await member.client.close()

        await asyncio.gather(*(one(m) for m in self.members))
        left, self.members = len(self.members), []
        return {"left": left}


async def worker_main() -> None:
    """Answer commands from stdin until ``leave`` or end of input."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    # replies own stdout: anything a library prints goes to stderr instead
    replies, sys.stdout = sys.stdout, sys.stderr
    worker = LoadWorker()
    reader = asyncio.StreamReader(limit=2**26)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "join": worker.join,
        "streams": lambda cmd: worker.streams(),
        "window": worker.open_window,
        "end": worker.end_window,
        "progress": lambda cmd: worker.progress(),
        "report": lambda cmd: worker.report(),
        "leave": worker.leave,
    }
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            reply = handlers[cmd["cmd"]](cmd)
            if asyncio.iscoroutine(reply):
                reply = await reply
        except Exception as exc:
            reply = {"error": f"{cmd.get('cmd')}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=replies, flush=True)
        if cmd["cmd"] == "leave":
            return
    await worker.leave({"timeout": 5})


if __name__ == "__main__":
    asyncio.run(worker_main())
