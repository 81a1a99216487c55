"""Diagnostics as one service the app starts and stops.

The signaling layer owns HTTP and permissions; it asks this service for data.
This service observes the media core through its event bus and its read
interface (``Participant.stats()``, publications' level meters and taps) and
never changes what the media core does.
"""

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
        """Start the periodic stats collector (owned here, stopped by close)."""

    async def close(self) -> None:
        """Stop every task this service started."""

    # --- fed by signaling --------------------------------------------------------

    def error_sent(self, peer_id: str, code: str, message: str) -> None:
        """An ``error`` was sent to this peer (goes into its timeline)."""

    def client_report(self, peer_id: str, report: dict[str, Any]) -> None:
        """A client ``stats`` message; raises ValueError when malformed."""

    # --- read by the HTTP API ----------------------------------------------------

    def owner_of(self, peer_id: str) -> str | None:
        """The user id of a live or recently departed peer, else None."""
        participant = self.sfu.participants.get(peer_id)
        return participant.user_id if participant is not None else None

    def peers(self) -> list[dict[str, Any]]:
        return []

    def stats(self, peer_id: str) -> dict[str, Any]:
        participant = self.sfu.participants.get(peer_id)
        return {"latest": participant.stats() if participant else [], "history": []}

    def report(self, peer_id: str) -> dict[str, Any]:
        return {"peer_id": peer_id, "verdict": "ok", "findings": []}

    def report_html(self, peer_id: str) -> str:
        return "<html><body>report</body></html>"

    def set_audio_logging(self, peer_id: str, enabled: bool) -> None:
        """Raises LookupError when the peer publishes no microphone."""

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain; version=0.0.4"
