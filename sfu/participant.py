"""A participant of a voice channel: its two peer connections and its lifecycle.

States: ``joining`` (no media yet), ``connecting``, ``connected``,
``disconnected`` (connected, but nothing arrived for ``media_silence``),
``failed`` and ``closed``. A participant that stays failed or disconnected for
``media_grace`` is removed by the server with reason ``timeout``. Closing it
ends its publications, subscriptions, peer connections and tasks, in that order,
and gives its media ports back.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import replace
from typing import Any, Protocol

from aiortc import RTCPeerConnection

from miscord_client.tokens import RIGHTS

from .errors import BadRequest, Forbidden
from .events import (
    Event,
    EventBus,
    MediaRestarted,
    ParticipantLeft,
    ParticipantView,
    StateChanged,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
    TrackView,
    TransportChanged,
)
from .publication import Publication
from .publisher import PublishSession
from .refs import owner
from .rtc.ice import parse_candidate, selected_pair
from .rtc.ports import PortLease
from .sdp_check import MAX_CANDIDATES
from .settings import MediaSettings
from .subscriber import SubscribeSession
from .tasks import TaskGroup

#: the right (``can``) publishing each source takes
PUBLISH_RIGHT = {"microphone": "speak", "screen": "screen"}

log = logging.getLogger("miscord.voice")
screen_log = logging.getLogger("miscord.screen")


class ParticipantOwner(Protocol):
    """What a participant needs of the channel it is in."""

    id: str
    settings: MediaSettings
    events: EventBus

    def publications_changed(self) -> None: ...

    def check_screen_allowed(self) -> None: ...


class Participant:
    def __init__(
        self,
        channel: ParticipantOwner,
        peer_id: str,
        user_id: str,
        name: str,
        ports: PortLease | None = None,
        can: frozenset[str] = frozenset(RIGHTS),
    ) -> None:
        self.channel = owner(channel)  # the owner; no cycle
        #: what its token allows: speak, screen, listen (contract 1.1)
        self.can = can
        self.channel_id = channel.id
        self.events = channel.events
        self.peer_id = peer_id
        self.user_id = user_id
        self.name = name
        self.settings = channel.settings
        #: the media ports taken for it at join (given back when it closes)
        self.ports = ports
        #: where its peer connections gather: the server's, at its own ports
        self.ice = replace(channel.settings.ice, ports=ports)
        self.tasks = TaskGroup(f"peer:{peer_id}")
        self.publish = PublishSession(self)
        self.subscribe = SubscribeSession(self)
        self.state = "joining"
        self.state_since = time.monotonic()
        self.joined_at = time.time()
        self.closed = False
        self.close_reason: str | None = None
        self.timed_out = False  # reported as MediaTimedOut
        self._dtls_watched: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()
        #: the peer's own mute of each source: of the current publication, or
        #: asked for before the source is published (forgotten at unpublish)
        self._own_muted: dict[str, bool] = {}
        #: sources an admin muted: the peer may not unmute them
        self.server_muted: set[str] = set()

    def emit(self, event: Event) -> None:
        self.events.emit(event)

    def view(self) -> ParticipantView:
        return ParticipantView(
            peer_id=self.peer_id,
            user_id=self.user_id,
            name=self.name,
            tracks=[
                TrackView(source=p.source, muted=p.muted)
                for p in self.publish.publications.values()
            ],
        )

    # --- requests from the client ---------------------------------------------------

    async def publish_offer(self, sdp: str, sources: dict[str, str]) -> str:
        return await self.publish.apply_offer(sdp, sources)

    async def subscribe_answer(self, sdp: str) -> None:
        await self.subscribe.apply_answer(sdp)

    async def add_candidate(
        self, pc_name: str, candidate: dict[str, Any] | None
    ) -> None:
        session = self.publish if pc_name == "publish" else self.subscribe
        pc = session.pc
        if pc is None or pc.remoteDescription is None:
            raise BadRequest(f"no {pc_name} negotiation to add a candidate to")
        if candidate is not None:
            session.candidates += 1
            if session.candidates > MAX_CANDIDATES:
                raise BadRequest(
                    f"more than {MAX_CANDIDATES} candidates on the {pc_name} "
                    "connection (in its SDP and trickled)"
                )
        parsed = None
        if candidate is not None:
            try:
                parsed = parse_candidate(candidate)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            if parsed is None:
                log.debug("ignored mDNS candidate from %s", self.peer_id)
                return
            # every m-line is bundled on the first transport
            parsed.sdpMid = pc.getTransceivers()[0].mid
            parsed.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(parsed)
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"candidate refused: {exc}") from None

    def set_muted(self, source: str, muted: bool) -> None:
        """Its own mute; refused (``forbidden``) to unmute what an admin muted."""
        if not muted and source in self.server_muted:
            raise Forbidden(f"the {source} is muted by the server")
        self._own_muted[source] = muted
        pub = self.publish.by_source(source)
        if pub is None:
            return
        if pub.muted != muted:
            pub.set_muted(muted)
            log.info("%s %s %s", self.peer_id, "muted" if muted else "unmuted", source)
            self.emit(TrackMuted(self.channel_id, self.peer_id, source, muted))

    def server_mute(self, source: str, muted: bool) -> None:
        """An admin's mute (contract 1.1): forwarding stops (or resumes) at
        once, everyone is told, and the peer cannot unmute it itself. Raises
        LookupError for a source it has not published."""
        pub = self.publish.by_source(source)
        if pub is None:
            raise LookupError(f"{self.peer_id} publishes no {source}")
        if muted:
            self.server_muted.add(source)
        else:
            self.server_muted.discard(source)
        log.warning(
            "%s %s by the server: %s",
            self.peer_id,
            "muted" if muted else "unmuted",
            source,
        )
        # an admin's unmute leaves the peer's own mute as it was
        effective = muted or self._own_muted.get(source, False)
        pub.set_muted(effective)
        self.emit(
            TrackMuted(self.channel_id, self.peer_id, source, effective, by="server")
        )

    # --- publications ---------------------------------------------------------------

    def check_screen_allowed(self) -> None:
        self.channel.check_screen_allowed()

    def check_may_publish(self, source: str) -> None:
        """Its token's rights (``can``) allow publishing ``source``."""
        right = PUBLISH_RIGHT.get(source)
        if right is not None and right not in self.can:
            raise Forbidden(f"this token may not publish a {source} (no {right!r})")

    def on_published(self, pub: Publication) -> None:
        own = self._own_muted.get(pub.source, False)
        pub.set_muted(own or pub.source in self.server_muted)
        (screen_log if pub.source == "screen" else log).info(
            "%s publishes %s (%s)", self.peer_id, pub.source, pub.codec.mimeType
        )
        self.emit(
            TrackPublished(
                self.channel_id,
                self.peer_id,
                source=pub.source,
                kind=pub.kind,
                codec=pub.codec.mimeType,
            )
        )
        self.channel.publications_changed()

    def on_unpublished(self, pub: Publication) -> None:
        self._own_muted.pop(pub.source, None)  # a new publication starts unmuted
        (screen_log if pub.source == "screen" else log).info(
            "%s stopped %s", self.peer_id, pub.source
        )
        self.emit(TrackUnpublished(self.channel_id, self.peer_id, source=pub.source))
        self.channel.publications_changed()

    # --- lifecycle ------------------------------------------------------------------

    def watch_pc(self, name: str, pc: RTCPeerConnection) -> None:
        """Record every transport state change of ``pc`` and follow it."""

        def on_change(layer: str, attribute: str) -> Any:
            def handler() -> None:
                state = getattr(pc, attribute)
                self.emit(
                    TransportChanged(
                        self.channel_id, self.peer_id, pc=name, layer=layer, state=state
                    )
                )
                self.update_state()

            return handler

        pc.on("iceconnectionstatechange", on_change("ice", "iceConnectionState"))
        pc.on("connectionstatechange", on_change("connection", "connectionState"))

    def watch_dtls(self, name: str, pc: RTCPeerConnection) -> None:
        """Report the DTLS state of ``pc`` too (aiortc's pc has no event for it);
        its bundled transport exists once the first description is applied."""
        transceivers = pc.getTransceivers()
        if not transceivers or pc in self._dtls_watched:
            return
        self._dtls_watched.add(pc)
        dtls = transceivers[0].receiver.transport

        def changed() -> None:
            self.emit(
                TransportChanged(
                    self.channel_id,
                    self.peer_id,
                    pc=name,
                    layer="dtls",
                    state=dtls.state,
                )
            )

        dtls.on("statechange", changed)

    def _pcs(self) -> list[tuple[str, RTCPeerConnection, Any]]:
        return [
            (name, session.pc, session.probe)
            for name, session in (
                ("publish", self.publish),
                ("subscribe", self.subscribe),
            )
            if session.pc is not None
        ]

    def compute_state(self, now: float) -> str:
        if self.closed:
            return "closed"
        pcs = self._pcs()
        states = {pc.connectionState for _, pc, _ in pcs}
        if not states or states == {"new"}:
            return "joining"
        if states & {"failed", "closed"}:
            return "failed"
        if states == {"connected"}:
            silent = any(
                now - probe.last_rx > self.settings.media_silence for _, _, probe in pcs
            )
            return "disconnected" if silent else "connected"
        if (
            self.state == "connecting"
            and now - self.state_since > self.settings.connect_timeout
        ):
            return "failed"
        return "connecting"

    def update_state(self) -> str:
        now = time.monotonic()
        state = self.compute_state(now)
        if state != self.state:
            previous, self.state, self.state_since = self.state, state, now
            level = (
                logging.WARNING if state in ("failed", "disconnected") else logging.INFO
            )
            log.log(
                level,
                "%s %s -> %s",
                self.peer_id,
                previous,
                state,
                extra={"success": state == "connected"},
            )
            self.emit(
                StateChanged(
                    self.channel_id, self.peer_id, state=state, previous=previous
                )
            )
        return state

    def overdue(self, now: float) -> bool:
        """Failed or disconnected for longer than the grace period."""
        return (
            self.state in ("failed", "disconnected")
            and now - self.state_since > self.settings.media_grace
        )

    def stats(self) -> list[dict[str, Any]]:
        """A getStats-style report (W3C field names) of both connections."""
        items: list[dict[str, Any]] = []
        for name, pc, probe in self._pcs():
            transceivers = pc.getTransceivers()
            if transceivers:
                transport = transceivers[0].receiver.transport
                for stat in transport._get_stats().values():
                    items.append(
                        {
                            "type": "transport",
                            "pc": name,
                            "packetsSent": stat.packetsSent,
                            "packetsReceived": stat.packetsReceived,
                            "bytesSent": stat.bytesSent,
                            "bytesReceived": stat.bytesReceived,
                            "dtlsState": stat.dtlsState,
                            "iceState": pc.iceConnectionState,
                            "lastPacketReceivedAgo": round(
                                time.monotonic() - probe.last_rx, 3
                            ),
                            # not W3C: what the connection's gate dropped
                            "ssrcsRefusedPackets": probe.rx.refused_ssrc,
                            "packetsOverBudget": probe.rx.py_dropped,
                        }
                    )
            pair = selected_pair(pc)
            if pair is not None:
                items.append({"type": "candidate-pair", "pc": name, **pair})
        for pub in self.publish.publications.values():
            items.append({**pub.stats(), "pc": "publish"})
        for item in self.subscribe.stats():
            items.append({**item, "pc": "subscribe"})
        return items

    async def restart_media(self, grace: float) -> None:
        """The client lost both peer connections (its network changed) and
        brings new ones: close the old without unpublishing anything. Its
        publications wait ``grace`` seconds for the new publish offer; the
        subscribe side is offered anew by ``subscribe.offer_again``. The
        others see nothing."""
        log.info("%s restarts its media", self.peer_id)
        await self.publish.restart(grace)
        await self.subscribe.restart()
        self.timed_out = False
        self.update_state()
        self.emit(MediaRestarted(self.channel_id, self.peer_id))

    async def close(self, reason: str) -> None:
        """End the publications (the others see them go), the subscriptions,
        both peer connections and every task, then report the close."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        await self.tasks.close()  # first: no negotiation may run on a closing pc
        try:
            await self.publish.close()
            await self.subscribe.close()
        finally:
            if self.ports is not None:
                self.ports.close()
        self.update_state()
        log.info("%s left %s (%s)", self.peer_id, self.channel_id, reason)
        self.emit(
            ParticipantLeft(
                self.channel_id, self.peer_id, user_id=self.user_id, reason=reason
            )
        )
