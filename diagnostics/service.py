"""Diagnostics as one service the app starts and stops (filled in by issue 8)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sfu.server import SfuServer
    from signaling.config import Settings
    from signaling.connections import ConnectionManager


class Diagnostics:
    def __init__(
        self, settings: Settings, sfu: SfuServer, manager: ConnectionManager
    ) -> None:
        self.settings = settings
        self.sfu = sfu
        self.manager = manager

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def error_sent(self, peer_id: str, code: str, message: str) -> None:
        pass

    def client_report(self, peer_id: str, report: dict[str, Any]) -> None:
        pass
