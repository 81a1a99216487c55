"""A participant's subscribe connection: only the server offers, so there is no glare.

One ``Slot`` per m-line. A slot carries one publication of another participant
at a time; when that ends the slot goes inactive and is reused by the next
publication of the same kind, so a long session's SDP stays as large as the most
it ever carried at once. Changes while an offer is outstanding are batched into
the next offer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiortc import (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    clock,
)
from aiortc.exceptions import InvalidStateError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from . import sdp_check
from .aiortc_seam import ActivityProbe, close_peer_connection, new_peer_connection
from .downlink import Downlink
from .errors import BadRequest, BadSdp
from .events import Negotiated, Subscribed, SubscribeOffer, Unsubscribed
from .fanout import FanoutSender, compound_reports
from .publication import Publication
from .refs import owner
from .trackpath import RelaySender, TrackSender

if TYPE_CHECKING:
    from .participant import Participant

log = logging.getLogger("miscord.voice")
screen_log = logging.getLogger("miscord.screen")

DOWNLINKS = {"fast": FanoutSender, "track": TrackSender, "relay": RelaySender}


@dataclass(eq=False)
class Slot:
    transceiver: RTCRtpTransceiver
    kind: str
    downlink: Downlink
    #: offered to the client, bound once its answer is applied
    pending: Publication | None = None
    publication: Publication | None = None
    codec: RTCRtpCodecParameters | None = None

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def carries(self) -> Publication | None:
        return self.pending or self.publication


def codec_preferences(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """Offer exactly the publication's codec (and RTX for video)."""
    kind = codec.mimeType.split("/")[0]
    key = sdp_check.codec_key(codec)
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if sdp_check.codec_key(c) == key][:1]
    chosen += [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen


@dataclass
class _Pending:
    sent_at: float
    mids: list[str] = field(default_factory=list)


class SubscribeSession:
    def __init__(self, participant: Participant) -> None:
        self.participant = owner(participant)  # the owner; no cycle
        self.pc: RTCPeerConnection | None = None
        self.probe = ActivityProbe(participant.peer_id)
        self.candidates = 0  # trickled remote candidates accepted
        self.slots: list[Slot] = []
        self.wanted: list[Publication] = []
        self._offer: _Pending | None = None
        self._dirty = False
        self._force = False  # offer even without changes (after a failed answer)
        self._lock = asyncio.Lock()
        self._rtcp_task: asyncio.Task[None] | None = None
        self.offers = 0

    @property
    def offer_pending(self) -> bool:
        return self._offer is not None

    def want(self, publications: list[Publication]) -> None:
        """The publications this participant should receive (all others' sources)."""
        if publications != self.wanted:
            self.wanted = publications
            self.schedule()

    def schedule(self, force: bool = False) -> None:
        """Negotiate now, or after the outstanding offer is answered."""
        if self.participant.closed:
            return
        self._dirty = True
        self._force = self._force or force
        if self._offer is None and not self._lock.locked():
            self.participant.tasks.spawn(self._negotiate(), "subscribe-offer")

    def _plan(self) -> bool:
        """Release slots of unwanted publications, assign new ones; True if changed."""
        changed = False
        wanted = [p for p in self.wanted if not p.closed]
        for slot in self.slots:
            carried = slot.carries
            if carried is not None and carried not in wanted:
                self._release(slot)
                changed = True
        carried_now = {slot.carries for slot in self.slots}
        for pub in wanted:
            if pub in carried_now:
                continue
            slot = next(
                (s for s in self.slots if s.kind == pub.kind and s.carries is None),
                None,
            )
            if slot is None:
                slot = self._new_slot(pub.kind)
            slot.pending = pub
            if slot.codec is None or sdp_check.codec_key(
                slot.codec
            ) != sdp_check.codec_key(pub.codec):
                slot.transceiver.setCodecPreferences(codec_preferences(pub.codec))
                slot.codec = pub.codec
            slot.transceiver.direction = "sendonly"
            changed = True
        return changed

    def _new_slot(self, kind: str) -> Slot:
        if self.pc is None:
            self.pc = new_peer_connection()
            self.participant.watch_pc("subscribe", self.pc)
        transceiver = self.pc.addTransceiver(kind, direction="sendonly")
        slot = Slot(transceiver, kind, None)  # type: ignore[arg-type]
        slot.downlink = DOWNLINKS[self.participant.settings.forwarding](
            transceiver, kind, self.participant.peer_id
        )
        self.slots.append(slot)
        if self.participant.settings.forwarding == "fast" and self._rtcp_task is None:
            self._rtcp_task = self.participant.tasks.spawn(self._run_rtcp(), "rtcp")
        return slot

    def _release(self, slot: Slot) -> None:
        pub = slot.publication
        if pub is not None:
            pub.detach(slot.downlink)
            self.participant.emit(
                Unsubscribed(
                    self.participant.channel_id,
                    self.participant.peer_id,
                    publisher=pub.peer_id,
                    source=pub.source,
                )
            )
        slot.pending = slot.publication = None
        slot.transceiver.direction = "inactive"

    async def _negotiate(self) -> None:
        async with self._lock:
            if self._offer is not None or self.participant.closed:
                return
            self._dirty = False
            changed = self._plan()
            if not (changed or self._force) or self.pc is None:
                return
            self._force = False
            assert self.pc is not None
            started = time.monotonic()
            try:
                await self.pc.setLocalDescription(await self.pc.createOffer())
            except InvalidStateError:
                # aiortc closes the pc itself when the client's end closes: the
                # participant is leaving and there is no one to offer to
                log.debug("subscribe pc of %s closed", self.participant.peer_id)
                return
            fast = self.participant.settings.forwarding == "fast"
            self.probe.watch(self.pc, "rtcp" if fast else None)
            self.participant.watch_dtls("subscribe", self.pc)
            tracks = {
                slot.mid: {
                    "peer_id": slot.carries.peer_id,
                    "source": slot.carries.source,
                }
                for slot in self.slots
                if slot.carries is not None and slot.mid is not None
            }
            for slot in self.slots:
                slot.downlink.mid = slot.mid
            self._offer = _Pending(started, [t.mid for t in self.pc.getTransceivers()])
            self.offers += 1
            self.participant.emit(
                SubscribeOffer(
                    self.participant.channel_id,
                    self.participant.peer_id,
                    sdp=self.pc.localDescription.sdp,
                    tracks=tracks,
                )
            )

    async def apply_answer(self, text: str) -> None:
        if self._offer is None or self.pc is None:
            raise BadRequest("no subscribe offer is outstanding")
        offer = self._offer
        try:
            sdp_check.check_subscribe_answer(text, offer.mids)
            await self.pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
            self.candidates = max(self.candidates, sdp_check.candidates(text))
        except Exception as exc:
            self._negotiated(offer, False, str(exc))
            # aiortc has no rollback: offer again (a new offer is allowed here)
            self._offer = None
            self.schedule(force=True)
            if isinstance(exc, BadSdp):
                raise
            raise BadSdp(f"answer refused: {type(exc).__name__}: {exc}") from None
        self._offer = None
        self._negotiated(offer, True)
        for slot in self.slots:
            if slot.pending is not None:
                self._bind(slot, slot.pending)
        if self._dirty:
            self.schedule()

    def _bind(self, slot: Slot, pub: Publication) -> None:
        slot.pending = None
        if pub.closed or pub not in self.wanted:
            # it left while the offer was out: the next offer makes the m-line inactive
            self._dirty = self._force = True
            slot.transceiver.direction = "inactive"
            return
        slot.publication = pub
        pub.attach(slot.downlink)
        self.participant.emit(
            Subscribed(
                self.participant.channel_id,
                self.participant.peer_id,
                publisher=pub.peer_id,
                source=pub.source,
                mid=slot.mid or "",
            )
        )

    def _negotiated(self, offer: _Pending, ok: bool, detail: str = "") -> None:
        self.participant.emit(
            Negotiated(
                self.participant.channel_id,
                self.participant.peer_id,
                pc="subscribe",
                offerer="server",
                seconds=round(time.monotonic() - offer.sent_at, 4),
                ok=ok,
                detail=detail,
            )
        )

    def check_offer_timeout(self, now: float, timeout: float) -> bool:
        """Re-offer when the client did not answer in time; True if it timed out."""
        if self._offer is None or now - self._offer.sent_at < timeout:
            return False
        log.warning(
            "subscribe offer to %s unanswered for %.0f s: offering again",
            self.participant.peer_id,
            timeout,
        )
        self._negotiated(self._offer, False, "no answer in time")
        self._offer = None
        self.schedule(force=True)
        return True

    async def _run_rtcp(self) -> None:
        """Sender reports for every fast-path m-line (aiortc's sender does not run)."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            senders = [s.downlink for s in self.slots]
            reports: list[tuple[bytes, bytes]] = []
            ntp, now, wall = clock.current_ntp_time(), time.monotonic(), time.time()
            for sender in senders:
                assert isinstance(sender, FanoutSender)
                sender.flush_transport_counters()
                report = sender.sender_report(ntp, now, wall)
                if report is not None:
                    reports.append((report, sender.sdes))
            ready = [s for s in senders if isinstance(s, FanoutSender) and s.hook.ready]
            if reports and ready:
                for packet in compound_reports(reports):
                    ready[0].hook.send_rtcp(packet)

    def stats(self) -> list[dict[str, object]]:
        items: list[dict[str, object]] = []
        for slot in self.slots:
            pub = slot.publication
            for item in slot.downlink.stats():
                if pub is not None:
                    item = {**item, "publisher": pub.peer_id, "source": pub.source}
                items.append(item)
        return items

    async def close(self) -> None:
        # the finished RTCP task's traceback holds a frame that holds this session
        self._rtcp_task = None
        for slot in self.slots:
            self._release(slot)
            slot.downlink.close()
        self.slots.clear()
        self.wanted = []
        self._offer = None
        pc, self.pc = self.pc, None
        if pc is not None:
            await close_peer_connection(pc)
