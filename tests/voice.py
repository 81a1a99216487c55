"""Helpers for voice tests: participants with tones, recorders per remote peer."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from typing import Any

from aiortc import RTCPeerConnection

from miscord_client.client import RemoteTrack, VoiceClient
from tests.media import HEARD, AudioRecorder, ToneTrack, tone_share


async def tone_participant(
    clients, server, user: str, freq: float, channel: str = "room", **client_args
) -> VoiceClient:
    client = clients(server, user, **client_args)
    await client.join(channel)
    client.tone = ToneTrack(freq)
    await client.publish(microphone=client.tone)
    return client


class Ears:
    """Records every remote microphone a client receives, keyed by peer id."""

    def __init__(self, client: VoiceClient, keep_seconds: float = 10.0) -> None:
        self.client = client
        self.keep_seconds = keep_seconds
        self.recorders: dict[str, AudioRecorder] = {}
        #: one recorder per received track: an m-line the server reuses for
        #: another peer keeps its track, and its recorder follows the new peer
        self._by_track: dict[int, tuple[object, AudioRecorder]] = {}

    def refresh(self) -> None:
        for remote in self.client.remote.values():
            if remote.source != "microphone":
                continue
            known = self._by_track.get(id(remote.track))
            if known is None:
                recorder = AudioRecorder(remote.track, self.keep_seconds)
                self._by_track[id(remote.track)] = (remote.track, recorder)
            elif self.recorders.get(remote.peer_id) is not known[1]:
                recorder = known[1]
                for peer, other in list(self.recorders.items()):
                    if other is recorder:
                        del self.recorders[peer]
                recorder.chunks.clear()  # what came before was someone else
            else:
                continue
            self.recorders[remote.peer_id] = recorder

    async def hears(
        self, peer_id: str, freq: float, timeout: float = 5.0, window: float = 0.5
    ) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.refresh()
            recorder = self.recorders.get(peer_id)
            if (
                recorder is not None
                and tone_share(recorder.last(window), freq) >= HEARD
            ):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{self.client.peer_id} did not hear {freq} Hz from {peer_id} within {timeout} s"
        )

    def share(self, peer_id: str, freq: float, seconds: float = 0.5) -> float:
        recorder = self.recorders.get(peer_id)
        return tone_share(recorder.last(seconds), freq) if recorder else 0.0

    async def stop(self) -> None:
        for recorder in self.recorders.values():
            await recorder.stop()


class Arrivals:
    """A ``raw_sink``: when each packet of each remote stream arrived."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = {}

    def __call__(self, remote: RemoteTrack, packet: Any) -> None:
        key = (remote.peer_id, remote.source)
        self.times.setdefault(key, []).append(time.monotonic())

    def longest_gap(self, key: tuple[str, str], since: float) -> float:
        times = [t for t in self.times.get(key, []) if t >= since]
        return max(b - a for a, b in itertools.pairwise(times))


def live_peer_connections() -> int:
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"
    )


def server_counts(services) -> dict[str, int]:
    sfu, manager = services.sfu, services.manager
    return {
        "participants": len(sfu.participants),
        "channels": len(sfu.channels),
        "connections": len(manager.live),
        "by_peer": len(manager.by_peer),
        "publications": sum(
            len(p.publish.publications) for p in sfu.participants.values()
        ),
        "subscribe_downlinks": sum(
            len(p.subscribe.downlinks) for p in sfu.participants.values()
        ),
        "downlinks": sum(
            len(pub.downlinks)
            for p in sfu.participants.values()
            for pub in p.publish.publications.values()
        ),
        "peer_tasks": sum(len(p.tasks) for p in sfu.participants.values()),
    }


async def settle(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
