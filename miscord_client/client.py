"""A Python client for miscord-sfu: join a channel, publish, receive, mute, leave.

    async with VoiceClient("http://127.0.0.1:8080", token) as client:
        await client.join("general")
        await client.publish(microphone=my_audio_track)
        remote = await client.wait_for_track(peer_id, "microphone")
        frame = await remote.track.recv()
        await client.mute("microphone", True)
        await client.leave()

It speaks the contract (``/ws``) and uses aiortc for media: a publish connection
it offers on, a subscribe connection the server offers on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

from . import ice
from .rtc import RawReceiver, close_peer_connection, new_peer_connection

log = logging.getLogger("miscord.debug")

SOURCES = {"microphone": "audio", "screen": "video"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServerError(Exception):
    """The server answered a request with ``error``."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('message')}")
        self.code = message.get("code")
        self.message = message


@dataclass
class RemoteTrack:
    """What one m-line of the subscribe connection currently carries."""

    mid: str
    peer_id: str
    source: str
    track: MediaStreamTrack
    transceiver: RTCRtpTransceiver


class VoiceClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        ice_hosts: list[str] | None = None,
        history: int = 2000,
        raw_sink: Callable[[RemoteTrack, RtpPacket], None] | None = None,
        relay: bool = False,
    ) -> None:
        self.url = base_url.rstrip("/").replace("http", "ws", 1) + "/ws"
        self.token = token
        if ice_hosts is None and urllib.parse.urlsplit(base_url).hostname in LOOPBACK:
            ice_hosts = ["127.0.0.1"]  # aioice leaves loopback out by itself
        #: where this client's ICE gathers (None: wherever aioice would)
        self.ice: ice.IcePolicy | None = None
        if ice_hosts is not None:
            ice.install()
            self.ice = ice.IcePolicy(hosts=tuple(ice_hosts))
        #: reach the server through TURN only (the relay transport policy)
        self.relay = relay
        #: the STUN/TURN servers of ``joined`` (TURN with credentials)
        self.ice_servers: list[RTCIceServer] = []
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.peer_id: str | None = None
        self.channel: str | None = None
        self.participants: dict[str, dict[str, Any]] = {}
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None
        self.remote: dict[str, RemoteTrack] = {}
        self.published: dict[str, RTCRtpTransceiver] = {}
        self.messages: deque[dict[str, Any]] = deque(maxlen=history)
        self.errors: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: when set, received media is not decoded: each RTP packet goes here
        self.raw_sink = raw_sink
        self._hooked: set[str] = set()
        self._stats_task: asyncio.Task[None] | None = None
        self.stats_sent = 0

    async def __aenter__(self) -> VoiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- signaling ------------------------------------------------------------------

    async def connect(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url, heartbeat=None, autoping=True)
        self._reader = asyncio.create_task(self._read(), name="client-reader")

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def request(
        self, message: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a message with an id and wait for the reply (or error) naming it."""
        ref = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[ref] = future
        try:
            await self.send({**message, "id": ref})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(ref, None)
        if reply.get("type") == "error":
            raise ServerError(reply)
        return reply

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(msg.data)
                await self._handle(message)
        finally:
            self.close_code = self.ws.close_code
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"closed {self.close_code}"))
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.messages.append(message)
        if kind == "error":
            self.errors.append(message)
        if kind == "joined":
            self._on_joined(message)
        elif kind == "participant_joined":
            participant = message["participant"]
            self.participants[participant["peer_id"]] = participant
        elif kind == "participant_left":
            self.participants.pop(message["peer_id"], None)
        elif kind == "track_muted":
            for track in self.participants.get(message["peer_id"], {}).get(
                "tracks", []
            ):
                if track["source"] == message["source"]:
                    track["muted"] = message["muted"]
        elif kind == "offer" and message.get("pc") == "subscribe":
            try:
                await self._on_subscribe_offer(message)
            except Exception:
                log.exception("client: handling a subscribe offer failed")
        future = self._waiting.get(message.get("ref"))
        if future is not None and not future.done():
            future.set_result(message)
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:
                log.exception("client: on_message failed")
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float | None = 10.0
    ) -> Any:
        """Wait until ``predicate()`` is truthy (checked on every message; None:
        no deadline). ConnectionError once the connection is closed."""

        async def check() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    if self._reader is None or self._reader.done():
                        raise ConnectionError(f"connection closed ({self.close_code})")
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(check(), timeout)

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Until the server closes the connection; its close code."""
        with contextlib.suppress(ConnectionError):
            await self.wait_for(lambda: False, timeout)
        return self.close_code

    async def wait_for_message(
        self, kind: str, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        """The first message (received or coming) of ``kind`` with ``fields``."""

        def find() -> dict[str, Any] | None:
            for message in self.messages:
                if message.get("type") == kind and all(
                    message.get(k) == v for k, v in fields.items()
                ):
                    return message
            return None

        return await self.wait_for(find, timeout)

    # --- the contract's requests ------------------------------------------------------

    async def join(self, channel: str, kind: str = "voice") -> dict[str, Any]:
        if self.ws is None:
            await self.connect()
        return await self.request(
            {"type": "join", "token": self.token, "channel": channel, "kind": kind}
        )

    def _on_joined(self, joined: dict[str, Any]) -> None:
        """Take in ``joined`` as the reader reads it: the server's subscribe
        offer may be the very next message, and its connection needs the ICE
        servers before ``join`` resumes."""
        self.peer_id = joined["peer_id"]
        self.channel = joined["channel"]
        self.participants = {p["peer_id"]: p for p in joined["participants"]}
        self.ice_servers = [
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in joined.get("ice_servers", [])
        ]

    def _new_peer_connection(self) -> RTCPeerConnection:
        """One of this client's two connections, with the server's ICE servers."""
        if self.relay and not any(
            str(url).startswith("turn")
            for server in self.ice_servers
            for url in ([server.urls] if isinstance(server.urls, str) else server.urls)
        ):
            raise ValueError(
                "relay=True, but the server's joined.ice_servers has no TURN server"
            )
        return new_peer_connection(self.ice_servers, relay=self.relay)

    async def publish(
        self,
        microphone: MediaStreamTrack | None = None,
        screen: MediaStreamTrack | None = None,
        prepare: Callable[[RTCPeerConnection], None] | None = None,
    ) -> None:
        """Start (or replace) sending these sources, then renegotiate."""
        async with self._lock:
            pc = self.publish_pc
            if pc is None:
                pc = self.publish_pc = self._new_peer_connection()
                # the server wants the microphone's m-line first, sending or not
                # (a screen alone still has one)
                self.published["microphone"] = pc.addTransceiver(
                    "audio", direction="inactive"
                )
            for source, track in (("microphone", microphone), ("screen", screen)):
                if track is None:
                    continue
                transceiver = self.published.get(source)
                if transceiver is None:
                    transceiver = pc.addTransceiver(track, direction="sendonly")
                    self.published[source] = transceiver
                else:
                    transceiver.sender.replaceTrack(track)
                    transceiver.direction = "sendonly"
            if prepare is not None:
                prepare(pc)
            await self._negotiate_publish()

    async def unpublish(self, source: str) -> None:
        """Stop sending a source; its m-line stays for reuse."""
        async with self._lock:
            transceiver = self.published.get(source)
            if transceiver is None or transceiver.direction == "inactive":
                return
            transceiver.direction = "inactive"
            track = transceiver.sender.track
            transceiver.sender.replaceTrack(None)
            if track is not None:
                track.stop()
            await self._negotiate_publish()

    async def _negotiate_publish(self) -> None:
        pc = self.publish_pc
        assert pc is not None
        ice.prepare(pc, self.ice)
        await pc.setLocalDescription(await pc.createOffer())
        sources = {
            t.mid: source
            for source, t in self.published.items()
            if t.direction == "sendonly" and t.mid is not None
        }
        reply = await self.request(
            {
                "type": "offer",
                "pc": "publish",
                "sdp": pc.localDescription.sdp,
                "sources": sources,
            }
        )
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))

    async def _on_subscribe_offer(self, message: dict[str, Any]) -> None:
        if self.subscribe_pc is None:
            self.subscribe_pc = self._new_peer_connection()
        pc = self.subscribe_pc
        await pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        tracks = message.get("tracks", {})
        remote: dict[str, RemoteTrack] = {}
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            info = tracks.get(mid) if mid is not None else None
            if mid is not None and info is not None and transceiver.receiver.track:
                remote[mid] = RemoteTrack(
                    mid=mid,
                    peer_id=info["peer_id"],
                    source=info["source"],
                    track=transceiver.receiver.track,
                    transceiver=transceiver,
                )
        self.remote = remote
        if self.raw_sink is not None:
            for transceiver in pc.getTransceivers():
                mid = transceiver.mid
                if mid and mid not in self._hooked and transceiver.receiver.track:
                    self._hooked.add(mid)
                    RawReceiver(
                        transceiver.receiver, transceiver.kind, self._raw_packet(mid)
                    )
        ice.prepare(pc, self.ice)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send(
            {"type": "answer", "pc": "subscribe", "sdp": pc.localDescription.sdp}
        )

    def _raw_packet(self, mid: str) -> Callable[[RtpPacket, object], None]:
        def sink(packet: RtpPacket, codec: object) -> None:
            remote = self.remote.get(mid)
            if remote is not None and self.raw_sink is not None:
                self.raw_sink(remote, packet)

        return sink

    def track_of(self, peer_id: str, source: str = "microphone") -> RemoteTrack | None:
        return next(
            (
                t
                for t in self.remote.values()
                if t.peer_id == peer_id and t.source == source
            ),
            None,
        )

    async def wait_for_track(
        self, peer_id: str, source: str = "microphone", timeout: float = 10.0
    ) -> RemoteTrack:
        return await self.wait_for(lambda: self.track_of(peer_id, source), timeout)

    async def mute(self, source: str, muted: bool) -> None:
        await self.send({"type": "mute", "source": source, "muted": muted})

    async def send_stats(self, report: dict[str, Any]) -> None:
        await self.send({"type": "stats", "report": report})

    def start_stats(self, interval: float = 2.0) -> None:
        """Send the ``stats`` report of docs/protocol.md every ``interval`` s
        (until ``close``), as the web client does."""
        if self._stats_task is None:
            self._stats_task = asyncio.create_task(
                self._send_stats_every(interval), name="client-stats"
            )

    async def _send_stats_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.ws is None or self.ws.closed:
                return
            try:
                await self.send_stats(await self.collect_stats())
                self.stats_sent += 1
            except (ConnectionError, RuntimeError) as exc:
                log.debug("client: stats not sent: %s", exc)

    async def collect_stats(self) -> dict[str, Any]:
        """A compact getStats summary. aiortc reports no audio energy,
        concealment or candidate-pair RTT, so those fields are left out."""
        report: dict[str, Any] = {
            "timestamp": time.time(),
            "outbound": [],
            "inbound": [],
            "candidatePair": {},
        }
        mic = self.published.get("microphone")
        if mic is not None and mic.direction == "sendonly":
            track = mic.sender.track
            out: dict[str, Any] = {
                "source": "microphone",
                "trackReadyState": track.readyState if track else "none",
            }
            stats = await mic.sender.getStats()
            for stat in stats.values():
                if stat.type == "outbound-rtp":
                    out.update(packetsSent=stat.packetsSent, bytesSent=stat.bytesSent)
            report["outbound"].append(out)
        for remote in list(self.remote.values()):
            if remote.source != "microphone":
                continue
            receiver = remote.transceiver.receiver
            stats = await receiver.getStats()
            stat = stats.get(f"inbound-rtp_{id(receiver)}")
            if stat is None:
                continue
            report["inbound"].append(
                {
                    "peer_id": remote.peer_id,
                    "source": remote.source,
                    "packetsReceived": stat.packetsReceived,
                    "packetsLost": max(0, stat.packetsLost),
                    # aiortc reports jitter in RTP timestamp units (48 kHz Opus)
                    "jitter": stat.jitter / 48000,
                }
            )
        return report

    async def ping(self) -> dict[str, Any]:
        return await self.request({"type": "ping"})

    async def leave(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await self.wait_for(
                    lambda: self._reader is None or self._reader.done(), 5
                )
        await self.close()

    async def close(self) -> None:
        """Close peer connections, the socket and the HTTP session."""
        stats_task, self._stats_task = self._stats_task, None
        if stats_task is not None:
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats_task
        # the socket first: an offer read after its pc closed would fail
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await close_peer_connection(pc)
        self.publish_pc = self.subscribe_pc = None
        if self.session is not None:
            await self.session.close()
            self.session = None
