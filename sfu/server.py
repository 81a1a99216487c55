"""The root of the media core's ownership tree: server -> channel -> participant.

``SfuServer`` owns the channels and one maintenance task (level meters and
active speakers every tick; lifecycle states, media timeouts and offer
timeouts every second). It never ends a participant on its own: a participant
whose media stayed failed past the grace is reported (``MediaTimedOut``) to
whoever owns it, which calls ``leave``. ``close()`` closes every participant
and the task.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque

import aioice.ice

from miscord_client.tokens import RIGHTS

from . import rtc
from .channel import Channel
from .errors import ChannelFull, NoPorts
from .events import EventBus, MediaTimedOut, ParticipantJoined
from .participant import Participant
from .rtc.compat import check_compatibility, selftest
from .rtc.ports import PortLease, PortPool, PortsExhausted
from .settings import MediaSettings
from .tasks import TaskGroup

log = logging.getLogger("miscord.voice")


def _percentiles(ordered: list[float]) -> dict[str, float] | None:
    if not ordered:
        return None

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0), "samples": len(ordered)}


TICK = 0.2  # seconds between speaker updates


class SfuServer:
    def __init__(self, settings: MediaSettings, events: EventBus | None = None) -> None:
        check_compatibility()
        self.settings = settings
        self.events = events or EventBus()
        self.channels: dict[str, Channel] = {}
        self.participants: dict[str, Participant] = {}
        self.tasks = TaskGroup("sfu")
        #: the media port range, when one is set
        self.ports = PortPool(settings.rtc_ports) if settings.rtc_ports else None
        self.timed_out = 0  # participants reported for a media timeout
        #: how late the event loop ran a timer (recent ticks): queueing delay
        self.loop_lag: deque[float] = deque(maxlen=600)

    async def start(self) -> None:
        rtc.install()
        await selftest()
        self.tasks.spawn(self._maintain(), "maintenance")

    async def join(
        self,
        channel_id: str,
        user_id: str,
        name: str,
        can: frozenset[str] = frozenset(RIGHTS),
    ) -> Participant:
        """Add a participant; its media starts when it offers or is offered to.
        ``can``: its token's rights (speak, screen, listen)."""
        channel = self.channels.get(channel_id)
        if channel is None and len(self.channels) >= self.settings.max_channels:
            raise ChannelFull(
                f"the server holds {len(self.channels)} voice channels, the most "
                "allowed"
            )
        if (
            channel is not None
            and len(channel.participants) >= self.settings.max_participants
        ):
            raise ChannelFull(
                f"channel {channel_id} has {len(channel.participants)} participants, "
                "the most allowed"
            )
        ports = self._lease_ports()  # the last refusal: nothing to undo after it
        if channel is None:
            channel = self.channels[channel_id] = Channel(
                channel_id, self.settings, self.events
            )
        participant = Participant(
            channel, secrets.token_hex(6), user_id, name, ports, can
        )
        channel.participants[participant.peer_id] = participant
        self.participants[participant.peer_id] = participant
        log.info(
            "%s (%s) joined %s as %s",
            name,
            user_id,
            channel_id,
            participant.peer_id,
            extra={"success": True},
        )
        self.events.emit(
            ParticipantJoined(channel_id, participant.peer_id, participant.view())
        )
        return participant

    def _lease_ports(self) -> PortLease | None:
        """A newcomer's ports, one per address and peer connection (publish,
        subscribe), taken before anything else so that a full range refuses
        only the newcomer."""
        if self.ports is None:
            return None
        hosts = self.settings.ice_hosts or aioice.ice.get_host_addresses(True, True)
        try:
            return self.ports.lease(2 * len(hosts))
        except PortsExhausted as exc:
            log.warning("refused a join: %s", exc)
            raise NoPorts(str(exc)) from None

    def start_media(self, participant: Participant) -> None:
        """Offer the participant what the channel already publishes."""
        participant.channel.publications_changed()

    async def leave(self, participant: Participant, reason: str) -> None:
        """Remove a participant and release everything it owns (idempotent):
        out of every registry first, so its seat is free whatever closing
        takes, then closed (which reports ``ParticipantLeft``)."""
        if self.participants.pop(participant.peer_id, None) is None:
            return
        channel = self.channels[participant.channel_id]
        channel.participants.pop(participant.peer_id, None)
        if not channel.participants:
            del self.channels[channel.id]
        await participant.close(reason)

    async def _maintain(self) -> None:
        ticks = 0
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.loop_lag.append(now - asleep - TICK)
            for channel in list(self.channels.values()):
                channel.update_speakers(now)
            ticks += 1
            if ticks % int(1 / TICK) == 0:
                self._check_lifecycles(now)

    def _check_lifecycles(self, now: float) -> None:
        for participant in list(self.participants.values()):
            participant.update_state()
            participant.subscribe.check_offer_timeout(now, self.settings.offer_timeout)
            if participant.overdue(now) and not participant.timed_out:
                log.warning(
                    "%s stayed %s for %.0f s: its media timed out",
                    participant.peer_id,
                    participant.state,
                    now - participant.state_since,
                )
                participant.timed_out = True
                self.timed_out += 1
                self.events.emit(
                    MediaTimedOut(
                        participant.channel_id,
                        participant.peer_id,
                        state=participant.state,
                    )
                )

    def forwarding_stats(self, reset: bool = False) -> dict[str, object]:
        """Totals and recent timings of the forwarding path (``reset`` starts a
        new measurement window for the timings)."""
        pubs = [
            pub
            for participant in self.participants.values()
            for pub in participant.publish.publications.values()
        ]
        if reset:
            self.loop_lag.clear()
            for pub in pubs:
                pub.clear_fanout_times()
        fanout = sorted(t for p in pubs for t in p.fanout_times())
        lag = sorted(self.loop_lag)
        return {
            "forwarding": self.settings.forwarding,
            "publications": len(pubs),
            "packets_received": sum(p.packets for p in pubs),
            "packets_forwarded": sum(p.forwarded for p in pubs),
            "fanout_ms": _percentiles(fanout),
            "loop_lag_ms": _percentiles(lag),
        }

    async def close(self) -> None:
        await self.tasks.close()
        for participant in list(self.participants.values()):
            await self.leave(participant, "left")
