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

A socket lost without ``leave`` (or peer connections that failed) is resumed
by itself (``resume=True``, contract 1.1): with backoff and jitter inside the
server's grace, ``media: "restart"`` with new peer connections when the old
ones failed, and a fresh join (publishing the same tracks again) when the
server no longer knows the token. Never after ``leave`` or ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
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
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from . import ice
from .protocol import Close, MediaMode
from .rtc import (
    Arrivals,
    RawReceiver,
    close_peer_connection,
    new_peer_connection,
    with_opus_parameters,
)

log = logging.getLogger("miscord.debug")

SOURCES = {"microphone": "audio", "screen": "video"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: close codes after which the participant may still be kept: none (the
#: connection dropped), abnormal closure, broken, heartbeat lost
RESUMABLE = (None, 1006, Close.MEDIA_LOST, Close.TIMEOUT)
#: seconds a resume is tried before joining afresh (inside the server's 15 s)
RESUME_WINDOW = 12.0


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


class _Lent(MediaStreamTrack):
    """The caller's track as one sender sees it. aiortc stops a sender's track
    when its connection closes (even under us); this stand-in ends alone, so
    the caller's track goes on to the next connection (a restart, a fresh
    join). The client stops the caller's track itself: on unpublish, on close."""

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = track.kind
        self.track = track

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.track.recv()


class VoiceClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        ice_hosts: list[str] | None = None,
        history: int = 2000,
        raw_sink: Callable[[RemoteTrack, RtpPacket], None] | None = None,
        relay: bool = False,
        resume: bool = True,
        opus_fmtp: Mapping[str, int] | None = None,
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
        #: resume by itself after a lost socket or failed media
        self.resume = resume
        #: Opus parameters its publish offers ask for (``useinbandfec=1``
        #: when the Opus it sends carries FEC, as pre-encoded packets may)
        self.opus_fmtp = dict(opus_fmtp or {})
        #: the token of the last joined/resumed (what a resume takes)
        self.resume_token: str | None = None
        #: the tracks published, by source, to publish again after a restart
        self._tracks: dict[str, MediaStreamTrack] = {}
        #: leave() or close() was called: never resume
        self._deliberate = False
        self._recovery: asyncio.Task[None] | None = None
        self.resumes = 0  # resumes that succeeded
        self.rejoins = 0  # fresh joins after a refused resume

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
            if self.close_code in RESUMABLE:
                self._recover("keep")
            await self._notify()

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.messages.append(message)
        if kind == "error":
            self.errors.append(message)
        if kind in ("joined", "resumed"):
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
        await self._notify()

    async def _notify(self) -> None:
        """Wake ``wait_for``: something changed."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float | None = 10.0
    ) -> Any:
        """Wait until ``predicate()`` is truthy (checked on every message; None:
        no deadline). ConnectionError once the connection is closed and not
        being resumed."""

        async def check() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    if (
                        self._reader is None or self._reader.done()
                    ) and not self.reconnecting:
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

    async def take_over(
        self, resume_token: str, media: MediaMode = "restart"
    ) -> dict[str, Any]:
        """Instead of ``join``: resume a kept participant whose token another
        client held (a process that restarted, a device that changed
        networks); ``restart`` brings this client's new peer connections
        under its publications. A refused token raises ``ConnectionError``
        (closed 4410)."""
        if self.ws is None:
            await self.connect()
        return await self.request(
            {"type": "resume", "resume_token": resume_token, "media": media}
        )

    def _on_joined(self, joined: dict[str, Any]) -> None:
        """Take in ``joined`` as the reader reads it: the server's subscribe
        offer may be the very next message, and its connection needs the ICE
        servers before ``join`` resumes."""
        self.peer_id = joined["peer_id"]
        self.channel = joined["channel"]
        self.resume_token = joined.get("resume_token")
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
        """One of this client's two connections, with the server's ICE servers;
        one that fails is restarted (``_recover``)."""
        if self.relay and not any(
            str(url).startswith("turn")
            for server in self.ice_servers
            for url in ([server.urls] if isinstance(server.urls, str) else server.urls)
        ):
            raise ValueError(
                "relay=True, but the server's joined.ice_servers has no TURN server"
            )
        pc = new_peer_connection(self.ice_servers, relay=self.relay)

        @pc.on("connectionstatechange")
        def failed() -> None:
            # not "closed": aiortc closes a pc itself when the server ends
            # the participant, and a close code follows on the socket
            if pc.connectionState == "failed":
                self._recover("restart")

        return pc

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
                self._tracks[source] = track
                transceiver = self.published.get(source)
                if transceiver is None:
                    transceiver = pc.addTransceiver(_Lent(track), direction="sendonly")
                    self.published[source] = transceiver
                else:
                    transceiver.sender.replaceTrack(_Lent(track))
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
            track = self._tracks.pop(source, None)
            lent = transceiver.sender.track
            transceiver.sender.replaceTrack(None)
            for stopped in (lent, track):
                if stopped is not None:
                    stopped.stop()
            await self._negotiate_publish()

    async def _negotiate_publish(self) -> None:
        pc = self.publish_pc
        assert pc is not None
        ice.prepare(pc, self.ice)
        offer = await pc.createOffer()
        if self.opus_fmtp:
            offer = with_opus_parameters(offer, self.opus_fmtp)
        await pc.setLocalDescription(offer)
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
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if mid and mid not in self._hooked and transceiver.receiver.track:
                self._hooked.add(mid)
                if self.raw_sink is not None:
                    RawReceiver(
                        transceiver.receiver, transceiver.kind, self._raw_packet(mid)
                    )
                elif transceiver.kind == "audio":
                    Arrivals(transceiver.receiver)
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
            arrivals = getattr(receiver, Arrivals.ATTRIBUTE, None)
            report["inbound"].append(
                {
                    "peer_id": remote.peer_id,
                    "source": remote.source,
                    "packetsReceived": stat.packetsReceived,
                    "packetsLost": max(0, stat.packetsLost),
                    # aiortc reports jitter in RTP timestamp units (48 kHz Opus)
                    "jitter": stat.jitter / 48000,
                    **(arrivals.stats() if arrivals is not None else {}),
                }
            )
        return report

    async def ping(self) -> dict[str, Any]:
        return await self.request({"type": "ping"})

    async def leave(self) -> None:
        self._deliberate = True
        if self.ws is not None and not self.ws.closed:
            await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await self.wait_for(
                    lambda: self._reader is None or self._reader.done(), 5
                )
        await self.close()

    async def close(self) -> None:
        """Close peer connections, the socket and the HTTP session (a closed
        socket without ``leave``: the server keeps the participant for its
        grace; ``leave`` first to go at once)."""
        self._deliberate = True
        recovery, self._recovery = self._recovery, None
        if recovery is not None and recovery is not asyncio.current_task():
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recovery
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
        await self._drop_media()
        for track in self._tracks.values():  # handed over by publish()
            track.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _drop_media(self) -> None:
        """Close both peer connections; the published tracks go on (``_Lent``)."""
        pcs = (self.publish_pc, self.subscribe_pc)
        self.publish_pc = self.subscribe_pc = None
        self.published, self.remote = {}, {}
        self._hooked.clear()
        for pc in pcs:
            if pc is not None:
                await close_peer_connection(pc)

    # --- resuming (contract 1.1) ------------------------------------------------------

    @property
    def reconnecting(self) -> bool:
        return self._recovery is not None and not self._recovery.done()

    def _recover(self, media: MediaMode) -> None:
        """Start resuming, unless it is deliberate, off or under way."""
        if (
            self._deliberate
            or not self.resume
            or self.resume_token is None
            or self.reconnecting
        ):
            return
        self._recovery = asyncio.create_task(self._resume(media), name="resume")

    async def _resume(self, media: MediaMode) -> None:
        """Resume on a new socket, ``restart`` if the peer connections failed;
        retried with backoff and jitter for ``RESUME_WINDOW`` seconds; a
        refused token (4410) or a window run out: join afresh, as at once
        after a 1011."""
        try:
            # 1011: its worker or node is gone, with the participant: no resume
            lost = self.close_code == Close.MEDIA_LOST
            if lost or not await self._resume_within_window(media):
                await self._join_again()
        except (ServerError, ConnectionError, OSError, aiohttp.ClientError) as exc:
            log.warning("client: could not join %s again: %s", self.channel, exc)
        finally:
            self._recovery = None  # not reconnecting: waiters look again
            await self._notify()

    async def _resume_within_window(self, media: MediaMode) -> bool:
        """Whether it resumed (or need not: deliberate, or the server drains)."""
        deadline = time.monotonic() + RESUME_WINDOW
        delay = 0.25
        while not self._deliberate and self.resume_token is not None:
            if any(
                pc is not None and pc.connectionState in ("failed", "closed")
                for pc in (self.publish_pc, self.subscribe_pc)
            ):
                media = "restart"
            log.info("client: resuming %s (%s media)", self.peer_id, media)
            try:
                await self._new_socket()
                if media == "restart":
                    await self._drop_media()
                await self.take_over(self.resume_token, media)
                if media == "restart":
                    await self._publish_again()
                self.resumes += 1
                return True
            except (ConnectionError, OSError, aiohttp.ClientError, TimeoutError):
                if self.close_code == Close.RESUME_REFUSED:
                    return False
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
        return True

    async def _join_again(self) -> None:
        """The server does not know us any more: a fresh join, the same tracks."""
        log.info("client: joining %s afresh", self.channel)
        await self._drop_media()
        await self._new_socket()
        assert self.channel is not None
        await self.join(self.channel)
        await self._publish_again()
        self.rejoins += 1

    async def _publish_again(self) -> None:
        tracks = dict(self._tracks)
        if tracks:
            await self.publish(
                microphone=tracks.get("microphone"), screen=tracks.get("screen")
            )

    async def _new_socket(self) -> None:
        """Replace a closed socket (or close the one whose media failed: the
        server keeps the participant, as for any socket lost without leave)."""
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.session is None:
            self.session = aiohttp.ClientSession()
        self.close_code = None
        self.ws = await self.session.ws_connect(self.url, heartbeat=None, autoping=True)
        self._reader = asyncio.create_task(self._read(), name="client-reader")
