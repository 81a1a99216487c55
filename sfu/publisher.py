"""A participant's publish connection: the client offers, the server answers.

Owns the publish ``RTCPeerConnection`` and the participant's publications (at
most one microphone and one screen), created and ended as the client's offers
add, stop or reuse m-lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription

from miscord_client import ice

from . import sdp_check
from .errors import BadSdp, NoPorts
from .events import Negotiated
from .owners import ConnectionOwner
from .publication import Publication
from .refs import owner
from .rtc.inbound import ActivityProbe, ReceiveHook
from .rtc.peer import close_peer_connection, new_peer_connection, restrict_codecs
from .rtc.ports import PortsExhausted
from .sdp_check import codec_key

log = logging.getLogger("miscord.voice")
screen_log = logging.getLogger("miscord.screen")


class PublisherOwner(ConnectionOwner, Protocol):
    """What a publish connection needs of the participant that owns it."""

    def check_screen_allowed(self) -> None: ...

    def check_may_publish(self, source: str) -> None: ...

    def on_published(self, pub: Publication) -> None: ...

    def on_unpublished(self, pub: Publication) -> None: ...


class PublishSession:
    def __init__(self, participant: PublisherOwner) -> None:
        self.participant = owner(participant)  # the owner; no cycle
        self.pc: RTCPeerConnection | None = None
        self.probe = ActivityProbe(participant.peer_id)
        self.candidates = 0  # trickled remote candidates accepted
        self.publications: dict[str, Publication] = {}  # by source
        self._hooks: dict[str, ReceiveHook] = {}  # by mid, one per receiver
        self._mids: list[str] = []

    def by_source(self, source: str) -> Publication | None:
        return self.publications.get(source)

    async def apply_offer(self, text: str, sources: dict[str, str]) -> str:
        """Apply a publish offer; returns the answer SDP."""
        offered = sdp_check.check_publish_offer(text, sources, self._mids)
        for media in offered:  # before anything of the offer applies
            if media.sending and media.mid in sources:
                self.participant.check_may_publish(sources[media.mid])
        wants_screen = any(
            m.sending and sources.get(m.mid) == "screen" for m in offered
        )
        if wants_screen and "screen" not in self.publications:
            self.participant.check_screen_allowed()
        started = time.monotonic()
        pc, first = self.pc, self.pc is None
        if pc is None:
            pc = self.pc = new_peer_connection()
            self.participant.watch_pc("publish", pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(text, "offer"))
            self._mids = [m.mid for m in offered]
            self._update_publications(pc, offered, sources)
            ice.prepare(pc, self.participant.ice)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            # aiortc refused late (the checks above missed something): a first
            # connection is discarded, a renegotiated one keeps its old state
            if first:
                await self.reset()
            self._negotiated(started, False, str(exc))
            if isinstance(exc, PortsExhausted):  # a socket to make again
                raise NoPorts(str(exc)) from None
            raise BadSdp(f"offer refused: {type(exc).__name__}: {exc}") from None
        self.candidates = max(self.candidates, sdp_check.candidates(text))
        self.probe.admit(ssrc for media in offered for ssrc in media.ssrcs)
        relay = self.participant.settings.forwarding == "relay"
        self.probe.watch(pc, None if relay else "rtp")
        self.participant.watch_dtls("publish", pc)
        self._negotiated(started, True)
        return pc.localDescription.sdp

    def _update_publications(
        self,
        pc: RTCPeerConnection,
        offered: list[sdp_check.OfferedMedia],
        sources: dict[str, str],
    ) -> None:
        transceivers = {t.mid: t for t in pc.getTransceivers()}
        for media in offered:
            transceiver = transceivers[media.mid]
            hook = self._hooks.get(media.mid)
            if hook is None and self.participant.settings.forwarding != "relay":
                hook = self._hooks[media.mid] = ReceiveHook(
                    transceiver.receiver, media.kind
                )
            source = sources.get(media.mid) if media.sending else None
            if source is not None and media.codec is not None:
                # aiortc negotiates every codec again on each offer
                restrict_codecs(transceiver, media.codec)
            current = next(
                (p for p in self.publications.values() if p.mid == media.mid), None
            )
            if current is not None and current.source != source:
                self._unpublish(current)
                current = None
            if source is not None and current is None and media.codec is not None:
                orphan = self.publications.get(source)
                if orphan is not None and orphan.orphaned:
                    if codec_key(orphan.codec) == codec_key(media.codec):
                        orphan.rebind(transceiver, media.codec, hook)
                        continue  # the same publication goes on: nobody is told
                    self._unpublish(orphan)
                pub = Publication(
                    self.participant, source, transceiver, media.codec, hook
                )
                if hook is not None:
                    hook.publish_to(pub)
                self.publications[source] = pub
                self.participant.on_published(pub)

    def _unpublish(self, pub: Publication) -> None:
        hook = self._hooks.get(pub.mid or "")
        if hook is not None:
            hook.publish_to(None)
        del self.publications[pub.source]
        pub.close()
        self.participant.on_unpublished(pub)

    def _negotiated(self, started: float, ok: bool, detail: str = "") -> None:
        self.participant.emit(
            Negotiated(
                self.participant.channel_id,
                self.participant.peer_id,
                pc="publish",
                offerer="client",
                seconds=round(time.monotonic() - started, 4),
                ok=ok,
                detail=detail,
            )
        )

    async def restart(self, grace: float) -> None:
        """The client lost this connection (its network changed) and will
        offer a new one: close it but keep the publications, each waiting up
        to ``grace`` seconds for a source of its name in the new offer
        (``Publication.rebind``), so their subscribers see nothing. (The relay
        baseline decodes from the old receivers: there they end.)"""
        if self.participant.settings.forwarding == "relay":
            await self.reset()
            return
        for pub in self.publications.values():
            pub.orphan()
        self._hooks.clear()
        self._mids = []
        self.probe = ActivityProbe(self.participant.peer_id)
        pc, self.pc = self.pc, None
        if pc is not None:
            await close_peer_connection(pc)
        if self.publications:
            self.participant.tasks.spawn(self._end_orphans(grace), "orphans")

    async def _end_orphans(self, grace: float) -> None:
        await asyncio.sleep(grace)
        for pub in list(self.publications.values()):
            if pub.orphaned:
                log.info(
                    "%s did not publish %s again within %.0f s",
                    self.participant.peer_id,
                    pub.source,
                    grace,
                )
                self._unpublish(pub)

    async def reset(self) -> None:
        """End every publication and close the connection."""
        for pub in list(self.publications.values()):
            self._unpublish(pub)
        self._hooks.clear()
        self._mids = []
        pc, self.pc = self.pc, None
        if pc is not None:
            await close_peer_connection(pc)

    close = reset
