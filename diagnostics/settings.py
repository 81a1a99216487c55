"""Settings of the diagnostics service (the server's configuration fills them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiagnosticsSettings:
    #: seconds between getStats samples per peer
    stats_interval: float = 2.0
    #: seconds of stats history kept per peer
    stats_history: float = 300.0
    #: seconds a departed peer stays diagnosable
    timeline_retention: float = 1800.0
    #: departed peers kept for diagnosis at most
    timeline_max_peers: int = 2000
    #: largest client stats message, bytes
    client_stats_bytes: int = 16 * 1024
