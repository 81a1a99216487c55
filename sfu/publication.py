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
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .audio_level import AudioLevelMeter
from .downlink import Downlink
from .events import KeyframeRequested
from .fastpath import FastDownlink, FastDownlinks, packet_args
from .native import ffi, lib
from .owners import PeerOwner
from .refs import owner
from .rtc.inbound import NativeStreamStatistics, ReceiveHook
from .trackpath import Relay

screen_log = logging.getLogger("miscord.screen")
voice_log = logging.getLogger("miscord.voice")


PacketTap = Callable[[RtpPacket], None]


class Publication:
    def __init__(
        self,
        participant: PeerOwner,
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
        #: counters, levels, the NACK history and the fast path's subscribers,
        #: in C: ``fan_ingest`` forwards a routed SSRC's packets without Python
        self.native = ffi.gc(lib.fan_publication_new(), lib.fan_publication_free)
        if self.native == ffi.NULL:
            raise MemoryError("fan_publication_new")
        self.downlinks: list[Downlink] = []
        #: the fast path's downlinks, sent to in one C call per packet
        self.fast = FastDownlinks(self.native)
        #: the other downlinks, written to one by one
        self.writers: list[Downlink] = []
        self._taps: list[PacketTap] = []
        self.created_at = time.time()
        self.levels = AudioLevelMeter(self.native) if self.kind == "audio" else None
        self.keyframe_requests = 0  # requests asked for by viewers
        self.keyframes_sent = 0  # PLIs actually sent to the publisher
        self._keyframe_at = -1e9
        self._keyframe_timer: asyncio.TimerHandle | None = None
        self._relay: Relay | None = None
        #: the receiver's hook (None in relay mode, where aiortc decodes)
        self.hook = hook

    # --- counters, kept in C (``struct fan_publication``) ---------------------------

    @property
    def packets(self) -> int:
        return self.native.packets

    @property
    def bytes(self) -> int:
        return self.native.bytes

    @property
    def forwarded(self) -> int:
        return self.native.forwarded

    @property
    def dropped_muted(self) -> int:
        return self.native.dropped_muted

    @property
    def first_packet_at(self) -> float | None:
        return self.native.first_at or None

    @property
    def last_packet_at(self) -> float | None:
        return self.native.last_at or None

    def fanout_times(self) -> list[float]:
        """Seconds the latest received packets took to reach every downlink."""
        return self.fanout_times_since(0)[0]

    def fanout_times_since(self, mark: int) -> tuple[list[float], int]:
        """The fan-out times recorded after ``mark`` (a count returned by the
        last call), without clearing them, and the new mark."""
        native = self.native
        total = native.times_n
        if total < mark:  # cleared since (a benchmark's window): all of them
            mark = 0
        count = min(total - mark, lib.FAN_TIMES)
        return [
            native.times[(total - count + i) % lib.FAN_TIMES] for i in range(count)
        ], total

    def clear_fanout_times(self) -> None:
        self.native.times_n = 0

    # --- forwarding ----------------------------------------------------------------

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """A received packet that Python handled (C takes the rest: see
        ``ReceiveHook.route``): counted, metered and fanned out in C all the
        same, then given to the track path's writers and the taps."""
        flags = lib.fan_publish(self.native, *packet_args(packet))
        if flags & lib.FAN_DROP:
            return  # another SSRC while this one is live
        self.after_native(flags, packet)
        if flags & lib.FAN_MUTED:
            return
        if self.writers:
            started = time.perf_counter()
            for downlink in self.writers:
                downlink.write(packet)
            lib.fan_add_time(self.native, time.perf_counter() - started)
            self.native.forwarded += len(self.writers)
        for tap in self._taps:
            tap(packet)

    def after_native(self, flags: int, packet: RtpPacket) -> None:
        """What C left of a packet it forwarded: a first packet to log, fast-path
        subscribers to start or resync, gaps to record."""
        if flags & lib.FAN_FIRST:
            log = screen_log if self.source == "screen" else voice_log
            log.info("first packet of %s/%s", self.peer_id, self.source)
        self.fast.finish(flags, packet)

    def set_muted(self, muted: bool) -> None:
        if muted != self.muted:
            self.muted = muted
            self.native.muted = muted
            self.native.epoch += 1  # a new stream for C: downlinks re-anchor

    def add_tap(self, tap: PacketTap) -> None:
        """Call ``tap`` with every forwarded packet (its SSRC then stays in Python)."""
        self._taps.append(tap)
        self._update_python()

    def remove_tap(self, tap: PacketTap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)
            self._update_python()

    @property
    def taps(self) -> list[PacketTap]:
        return list(self._taps)

    def _update_python(self) -> None:
        self.native.python = bool(self._taps or self.writers)

    def attach(self, downlink: Downlink) -> None:
        downlink.bind(self)
        self.downlinks.append(downlink)
        if isinstance(downlink, FastDownlink):
            self.fast.add(downlink)
        else:
            self.writers.append(downlink)
            self._update_python()

    def detach(self, downlink: Downlink) -> None:
        if downlink in self.downlinks:
            self.downlinks.remove(downlink)
            if isinstance(downlink, FastDownlink):
                self.fast.remove(downlink)
            else:
                self.writers.remove(downlink)
                self._update_python()
        if downlink.publication is self:
            downlink.unbind()

    @property
    def orphaned(self) -> bool:
        """Its publish connection is gone; it waits for the next one (``rebind``)."""
        return self.mid is None

    def orphan(self) -> None:
        """The publish connection carrying it closed (the client restarts its
        media): keep the downlinks, stop receiving until ``rebind``."""
        if self.hook is not None:
            self.hook.publish_to(None)
        self.hook = None
        self.mid = None

    def rebind(
        self,
        transceiver: RTCRtpTransceiver,
        codec: RTCRtpCodecParameters,
        hook: ReceiveHook | None,
    ) -> None:
        """Receive from a new publish connection's m-line, as the same
        publication: its subscribers keep their m-lines and see one stream go
        on (C takes the new SSRC at once and re-anchors them); viewers of
        video wait for, and ask for, a keyframe of the new uplink."""
        self.transceiver, self.codec, self.mid = transceiver, codec, transceiver.mid
        self.hook = hook
        if hook is not None:
            hook.publish_to(self)
        self.native.in_last_at = 0.0  # the old SSRC is silent: no switch delay
        self.native.epoch += 1
        for downlink in list(self.downlinks):
            downlink.bind(self)

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
            # not W3C: another SSRC's, while this one was live
            "packetsDroppedSsrc": self.native.dropped_ssrc,
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
                    packetsDuplicated=self.native.duplicates,
                )
                if isinstance(stream, NativeStreamStatistics):
                    # not W3C (burst* were, in an earlier draft): see arrival()
                    out.update(stream.arrival())
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
        self._taps.clear()
