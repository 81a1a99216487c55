"""A publication: one source (microphone or screen) a participant sends us.

It receives the publisher's RTP once, without decoding, and hands each packet to
every bound downlink (one per subscriber m-line). It owns the keyframe-request
throttle: however many viewers ask, the publisher sees at most one request per
``keyframe_interval``, and a request inside the interval is deferred, not lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .aiortc_seam import ReceiveHook
from .audio_level import AudioLevelMeter
from .downlink import Downlink
from .events import KeyframeRequested
from .fanout import FanoutGroup, FanoutSender
from .refs import owner
from .trackpath import Relay

if TYPE_CHECKING:
    from .participant import Participant

screen_log = logging.getLogger("miscord.screen")
voice_log = logging.getLogger("miscord.voice")


PacketTap = Callable[[RtpPacket], None]


class Publication:
    def __init__(
        self,
        participant: Participant,
        source: str,
        transceiver: RTCRtpTransceiver,
        codec: RTCRtpCodecParameters,
        hook: ReceiveHook | None,
    ) -> None:
        #: weak: the participant owns this publication, not the reverse
        self.participant = owner(participant)
        self.peer_id = participant.peer_id
        self.closed = False
        self.source = source
        self.kind = transceiver.kind
        self.transceiver = transceiver
        self.codec = codec
        self.mid = transceiver.mid
        self.muted = False
        #: bumped whenever forwarding pauses, so downlinks re-anchor their offsets
        self.epoch = 0
        self.downlinks: list[Downlink] = []
        #: the fast path's downlinks, sent to in one C call per packet
        self.fanout = FanoutGroup()
        #: the other downlinks, written to one by one
        self.writers: list[Downlink] = []
        self.taps: list[PacketTap] = []
        self.packets = 0
        self.bytes = 0
        self.forwarded = 0
        self.dropped_muted = 0
        #: seconds each received packet took to reach every downlink (recent ones)
        self.fanout_times: deque[float] = deque(maxlen=2048)
        self.first_packet_at: float | None = None
        self.last_packet_at: float | None = None
        self.created_at = time.time()
        self.levels = AudioLevelMeter() if self.kind == "audio" else None
        self.keyframe_requests = 0  # requests asked for by viewers
        self.keyframes_sent = 0  # PLIs actually sent to the publisher
        self._keyframe_at = -1e9
        self._keyframe_timer: asyncio.TimerHandle | None = None
        self._relay: Relay | None = None
        #: the receiver's hook (None in relay mode, where aiortc decodes)
        self.hook = hook

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """Every received packet of this source (the forwarding hot path)."""
        self.packets += 1
        self.bytes += len(packet.payload)
        self.last_packet_at = now = time.monotonic()
        if self.first_packet_at is None:
            self.first_packet_at = now
            log = screen_log if self.source == "screen" else voice_log
            log.info("first packet of %s/%s", self.peer_id, self.source)
        if self.levels is not None:
            self.levels.add(packet.extensions.audio_level)
        if self.muted:
            self.dropped_muted += 1
            return
        started = time.perf_counter()
        self.fanout.write(packet, self.epoch, now)
        for downlink in self.writers:
            downlink.write(packet)
        self.fanout_times.append(time.perf_counter() - started)
        self.forwarded += len(self.downlinks)
        for tap in self.taps:
            tap(packet)

    def set_muted(self, muted: bool) -> None:
        if muted != self.muted:
            self.muted = muted
            self.epoch += 1

    def attach(self, downlink: Downlink) -> None:
        downlink.bind(self)
        self.downlinks.append(downlink)
        if isinstance(downlink, FanoutSender):
            self.fanout.add(downlink)
        else:
            self.writers.append(downlink)

    def detach(self, downlink: Downlink) -> None:
        if downlink in self.downlinks:
            self.downlinks.remove(downlink)
            if isinstance(downlink, FanoutSender):
                self.fanout.remove(downlink)
            else:
                self.writers.remove(downlink)
        if downlink.publication is self:
            downlink.unbind()

    def relay_track(self) -> MediaStreamTrack:
        """A MediaRelay proxy of the decoded track (relay baseline only)."""
        if self._relay is None:
            self._relay = Relay(self.transceiver.receiver.track)
        return self._relay.subscribe()

    # --- keyframes -----------------------------------------------------------------

    def request_keyframe(self, requested_by: str) -> None:
        """A viewer needs a keyframe; throttled and coalesced per publisher."""
        if self.kind != "video":
            return
        self.keyframe_requests += 1
        wait = self._keyframe_at + self.participant.settings.keyframe_interval
        wait -= time.monotonic()
        sent = wait <= 0
        if sent:
            self._send_keyframe_request()
        elif self._keyframe_timer is None:
            loop = asyncio.get_running_loop()
            self._keyframe_timer = loop.call_later(wait, self._deferred_keyframe)
        screen_log.log(
            logging.INFO if sent else logging.DEBUG,
            "keyframe request for %s/%s by %s (%s)",
            self.peer_id,
            self.source,
            requested_by,
            "sent" if sent else "deferred by the throttle",
        )
        self.participant.emit(
            KeyframeRequested(
                self.participant.channel_id,
                self.peer_id,
                source=self.source,
                requested_by=requested_by,
                sent=sent,
            )
        )

    def _deferred_keyframe(self) -> None:
        self._keyframe_timer = None
        self._send_keyframe_request()

    def _send_keyframe_request(self) -> None:
        if self._keyframe_timer is not None:  # this request covers the deferred one
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        if self.hook is None or self.closed or self.participant.closed:
            return
        self._keyframe_at = time.monotonic()
        self.keyframes_sent += 1
        self.participant.tasks.spawn(self.hook.request_keyframe(), "pli")

    # --- lifecycle -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """inbound-rtp of this source as the server sees it (W3C names)."""
        out: dict[str, Any] = {
            "type": "inbound-rtp",
            "kind": self.kind,
            "mid": self.mid,
            "source": self.source,
            "codec": self.codec.mimeType,
            "packetsReceived": self.packets,
            "bytesReceived": self.bytes,
            "packetsForwarded": self.forwarded,
            "packetsDroppedMuted": self.dropped_muted,
            "keyframeRequests": self.keyframe_requests,
            "pliCount": self.keyframes_sent,
            "muted": self.muted,
        }
        if self.hook is not None:
            for ssrc, stream in list(self.hook.streams.items()):
                if ssrc in self.hook.rtx_ssrc:
                    continue
                out.update(
                    ssrc=ssrc,
                    packetsLost=stream.packets_lost,
                    jitter=stream.jitter / self.codec.clockRate,
                )
        if self.levels is not None and self.levels.current_dbov is not None:
            out["audioLevel"] = self.levels.linear
        return out

    def close(self) -> None:
        """Stop forwarding: every downlink is unbound (its owner releases it)."""
        self.closed = True
        if self._keyframe_timer is not None:
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        for downlink in list(self.downlinks):
            self.detach(downlink)
        self.taps.clear()
