"""A participant's subscribe connection: only the server offers, so there is no glare.

One ``Downlink`` per m-line, each carrying one publication of another
participant at a time and reused by the next of its kind (see ``downlink``).
Changes while an offer is outstanding are batched into the next offer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, clock
from aiortc.exceptions import InvalidStateError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from miscord_client import ice
from miscord_client.rtc import with_opus_parameters

from . import sdp_check
from .downlink import Downlink
from .errors import BadRequest, BadSdp
from .events import Negotiated, Subscribed, SubscribeOffer, Unsubscribed
from .fastpath import FastDownlink
from .owners import ConnectionOwner
from .publication import Publication
from .refs import owner
from .rtc.inbound import ActivityProbe
from .rtc.peer import close_peer_connection, new_peer_connection
from .rtc.rtcp import compound_reports
from .trackpath import RelayDownlink, TrackDownlink

log = logging.getLogger("miscord.voice")
#: Opus parameters of the server's subscribe offers (contract 1.1): receivers
#: decode the in-band FEC their senders put in
OPUS_OFFERED = {"useinbandfec": 1}

DOWNLINKS: dict[str, type[Downlink]] = {
    "fast": FastDownlink,
    "track": TrackDownlink,
    "relay": RelayDownlink,
}


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
    def __init__(self, participant: ConnectionOwner) -> None:
        self.participant = owner(participant)  # the owner; no cycle
        self.pc: RTCPeerConnection | None = None
        self.probe = ActivityProbe(participant.peer_id)
        self.candidates = 0  # trickled remote candidates accepted
        self.downlinks: list[Downlink] = []
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
        """Release downlinks of unwanted publications, give new ones a downlink;
        True if anything changed."""
        changed = False
        wanted = [p for p in self.wanted if not p.closed]
        for downlink in self.downlinks:
            carried = downlink.carries
            if carried is not None and carried not in wanted:
                self._release(downlink)
                changed = True
        carried_now = {downlink.carries for downlink in self.downlinks}
        for pub in wanted:
            if pub in carried_now:
                continue
            free = (d for d in self.downlinks if d.kind == pub.kind and not d.carries)
            downlink = next(free, None) or self._new_downlink(pub.kind)
            downlink.pending = pub
            if downlink.codec is None or sdp_check.codec_key(
                downlink.codec
            ) != sdp_check.codec_key(pub.codec):
                downlink.transceiver.setCodecPreferences(codec_preferences(pub.codec))
                downlink.codec = pub.codec
            downlink.transceiver.direction = "sendonly"
            changed = True
        return changed

    def _new_downlink(self, kind: str) -> Downlink:
        if self.pc is None:
            self.pc = new_peer_connection()
            self.participant.watch_pc("subscribe", self.pc)
        transceiver = self.pc.addTransceiver(kind, direction="sendonly")
        forwarding = self.participant.settings.forwarding
        downlink = DOWNLINKS[forwarding](transceiver, kind, self.participant.peer_id)
        self.downlinks.append(downlink)
        if forwarding == "fast" and self._rtcp_task is None:
            self._rtcp_task = self.participant.tasks.spawn(self._run_rtcp(), "rtcp")
        return downlink

    def _release(self, downlink: Downlink) -> None:
        pub = downlink.publication
        if pub is not None:
            pub.detach(downlink)
            self.participant.emit(
                Unsubscribed(
                    self.participant.channel_id,
                    self.participant.peer_id,
                    publisher=pub.peer_id,
                    source=pub.source,
                )
            )
        downlink.pending = downlink.publication = None
        downlink.transceiver.direction = "inactive"

    async def _negotiate(self) -> None:
        async with self._lock:
            if self._offer is not None or self.participant.closed:
                return
            self._dirty = False
            changed = self._plan()
            if not (changed or self._force) or self.pc is None:
                return
            self._force = False
            pc = self.pc
            started = time.monotonic()
            try:
                ice.prepare(pc, self.participant.ice)
                offer = with_opus_parameters(await pc.createOffer(), OPUS_OFFERED)
                await pc.setLocalDescription(offer)
            except InvalidStateError:
                # aiortc closes the pc itself when the client's end closes: the
                # participant is leaving and there is no one to offer to
                log.debug("subscribe pc of %s closed", self.participant.peer_id)
                return
            fast = self.participant.settings.forwarding == "fast"
            self.probe.watch(pc, "rtcp" if fast else None)
            self.participant.watch_dtls("subscribe", pc)
            tracks = {
                downlink.mid: {
                    "peer_id": downlink.carries.peer_id,
                    "source": downlink.carries.source,
                }
                for downlink in self.downlinks
                if downlink.carries is not None and downlink.mid is not None
            }
            mids = [t.mid for t in pc.getTransceivers() if t.mid is not None]
            self._offer = _Pending(started, mids)
            self.offers += 1
            self.participant.emit(
                SubscribeOffer(
                    self.participant.channel_id,
                    self.participant.peer_id,
                    sdp=pc.localDescription.sdp,
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
            self._offer_anew()
            if isinstance(exc, BadSdp):
                raise
            raise BadSdp(f"answer refused: {type(exc).__name__}: {exc}") from None
        self._offer = None
        self._negotiated(offer, True)
        for downlink in self.downlinks:
            if downlink.pending is not None:
                self._bind(downlink, downlink.pending)
        if self._dirty:
            self.schedule()

    def _bind(self, downlink: Downlink, pub: Publication) -> None:
        downlink.pending = None
        if pub.closed or pub not in self.wanted:
            # it left while the offer was out: the next offer makes the m-line inactive
            self._dirty = self._force = True
            downlink.transceiver.direction = "inactive"
            return
        pub.attach(downlink)
        self.participant.emit(
            Subscribed(
                self.participant.channel_id,
                self.participant.peer_id,
                publisher=pub.peer_id,
                source=pub.source,
                mid=downlink.mid or "",
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
        self._offer_anew()
        return True

    def _offer_anew(self) -> None:
        """Offer again (aiortc has no rollback; a new offer is allowed over
        one outstanding)."""
        self._offer = None
        self.schedule(force=True)

    def offer_again(self) -> None:
        """A new socket carries the participant: what it may have missed is
        offered again (an outstanding offer, changes since, or everything on
        a new connection after ``restart``); otherwise nothing is
        renegotiated."""
        if self._offer is not None or self._dirty or (self.pc is None and self.wanted):
            self._offer_anew()

    async def restart(self) -> None:
        """The client lost this connection: close it and its m-lines (the
        publications go on for everyone else); ``offer_again`` then offers
        everything wanted on a new one."""
        async with self._lock:  # a negotiation under way finishes first
            wanted = self.wanted
            await self.close()
            self.wanted = wanted

    async def _run_rtcp(self) -> None:
        """Sender reports for every fast-path m-line (aiortc's sender does not run)."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            downlinks = [d for d in self.downlinks if isinstance(d, FastDownlink)]
            reports: list[tuple[bytes, bytes]] = []
            ntp, now, wall = clock.current_ntp_time(), time.monotonic(), time.time()
            for downlink in downlinks:
                downlink.flush_transport_counters()
                report = downlink.sender_report(ntp, now, wall)
                if report is not None:
                    reports.append((report, downlink.sdes))
            ready = [d for d in downlinks if d.hook.ready]
            if reports and ready:
                for packet in compound_reports(reports):
                    ready[0].hook.send_rtcp(packet)

    def stats(self) -> list[dict[str, object]]:
        items: list[dict[str, object]] = []
        for downlink in self.downlinks:
            pub = downlink.publication
            for item in downlink.stats():
                if pub is not None:
                    item = {**item, "publisher": pub.peer_id, "source": pub.source}
                items.append(item)
        return items

    async def close(self) -> None:
        # the finished RTCP task's traceback holds a frame that holds this session
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()  # (a restart goes on with a new one)
        self._rtcp_task = None
        for downlink in self.downlinks:
            self._release(downlink)
            downlink.close()
        self.downlinks.clear()
        self.wanted = []
        self._offer = None
        pc, self.pc = self.pc, None
        if pc is not None:
            await close_peer_connection(pc)
