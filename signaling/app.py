"""The aiohttp application: routes, services and their lifecycle.

Everything long-lived starts in the app's cleanup context and stops there:
shutdown closes every WebSocket with 1001, every participant and every task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from diagnostics import logs
from diagnostics.service import Diagnostics
from sfu import events
from sfu.server import SfuServer

from . import http_api
from .config import Settings
from .connections import Connection, ConnectionManager
from .protocol import Close
from .session import websocket_handler

log = logs.get("websocket")


@dataclass
class Services:
    settings: Settings
    sfu: SfuServer
    manager: ConnectionManager
    diagnostics: Diagnostics | None = None
    started_at: float = field(default=0.0)

    def participants_of(
        self, channel_id: str, exclude: str | None = None
    ) -> list[dict[str, Any]]:
        channel = self.sfu.channels.get(channel_id)
        if channel is None:
            return []
        return [
            dataclasses.asdict(p.view())
            for p in channel.participants.values()
            if p.peer_id != exclude
        ]


SERVICES = web.AppKey("services", Services)


class EventRouter:
    """Turns media-core events into protocol messages for the right sockets."""

    def __init__(self, manager: ConnectionManager) -> None:
        self.manager = manager

    def __call__(self, event: events.Event) -> None:
        manager = self.manager
        origin = manager.by_peer.get(event.peer_id) if event.peer_id else None
        match event:
            case events.ParticipantJoined(participant=participant):
                self._broadcast(
                    event,
                    {
                        "type": "participant_joined",
                        "participant": dataclasses.asdict(participant),
                    },
                    origin,
                )
            case events.ParticipantLeft(reason=reason):
                self._broadcast(
                    event,
                    {
                        "type": "participant_left",
                        "peer_id": event.peer_id,
                        "reason": reason,
                    },
                    origin,
                )
                if origin is not None and not origin.closing:
                    # removed by the media core (timeout): its socket is useless now
                    manager.tasks.spawn(
                        manager.close(origin, Close.TIMEOUT, "media timed out", reason),
                        "media-timeout",
                    )
            case events.TrackPublished(source=source):
                self._broadcast(
                    event,
                    {
                        "type": "track_published",
                        "peer_id": event.peer_id,
                        "source": source,
                    },
                    origin,
                )
            case events.TrackUnpublished(source=source):
                self._broadcast(
                    event,
                    {
                        "type": "track_unpublished",
                        "peer_id": event.peer_id,
                        "source": source,
                    },
                    origin,
                )
            case events.TrackMuted(source=source, muted=muted):
                self._broadcast(
                    event,
                    {
                        "type": "track_muted",
                        "peer_id": event.peer_id,
                        "source": source,
                        "muted": muted,
                    },
                    origin,
                )
            case events.Speaking(speakers=speakers):
                self._broadcast(
                    event,
                    {
                        "type": "speaking",
                        "speakers": [
                            {"peer_id": peer, "level": level}
                            for peer, level in speakers
                        ],
                    },
                    None,
                )
            case events.SubscribeOffer(sdp=sdp, tracks=tracks) if origin is not None:
                manager.send(
                    origin,
                    {"type": "offer", "pc": "subscribe", "sdp": sdp, "tracks": tracks},
                )

    def _broadcast(
        self, event: events.Event, message: dict[str, Any], origin: Connection | None
    ) -> None:
        self.manager.broadcast(event.channel_id, message, exclude=origin)


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings()
    app = web.Application(client_max_size=1024 * 1024)
    bus = events.EventBus()
    manager = ConnectionManager(settings)
    sfu = SfuServer(settings.media(), bus)
    services = Services(settings, sfu, manager)
    services.diagnostics = Diagnostics(settings, sfu, manager)
    app[SERVICES] = services
    bus.subscribe(EventRouter(manager))

    async def teardown(conn: Connection, reason: str) -> None:
        if conn.participant is not None:
            await sfu.leave(conn.participant, reason)

    manager.on_teardown = teardown
    app.router.add_get("/ws", websocket_handler)
    http_api.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    import time

    services = app[SERVICES]
    services.started_at = time.time()
    await services.sfu.start()
    services.manager.tasks.spawn(services.manager.heartbeat(), "heartbeat")
    services.manager.tasks.spawn(services.manager.sweep_forever(), "sweep")
    if services.diagnostics is not None:
        await services.diagnostics.start()
    logs.success(
        log,
        "serving on %s:%s (ICE on %s, forwarding: %s)",
        services.settings.host,
        services.settings.port,
        ", ".join(services.settings.ice_hosts) or "all addresses",
        services.settings.forwarding,
    )
    yield
    await _on_shutdown(app)
    if services.diagnostics is not None:
        await services.diagnostics.close()
    await services.sfu.close()


async def _on_shutdown(app: web.Application) -> None:
    """Close every socket with 1001 before aiohttp waits for the handlers."""
    await app[SERVICES].manager.shutdown()
