"""What every request handler reaches: the settings and the long-lived parts
of the server, in one record the aiohttp app carries (``SERVICES``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from diagnostics.service import Diagnostics
from miscord_client import protocol
from sfu.server import SfuServer

from .config import Settings
from .connections import ConnectionManager
from .messages import participant_info
from .webhooks import Webhooks


@dataclass
class Services:
    settings: Settings
    sfu: SfuServer
    manager: ConnectionManager
    diagnostics: Diagnostics
    webhooks: Webhooks
    started_at: float = field(default=0.0)

    def participants_of(
        self, channel_id: str, exclude: str | None = None
    ) -> list[protocol.ParticipantInfo]:
        channel = self.sfu.channels.get(channel_id)
        if channel is None:
            return []
        return [
            participant_info(p.view())
            for p in channel.participants.values()
            if p.peer_id != exclude
        ]


SERVICES = web.AppKey("services", Services)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]
