"""Diagnostics as one service the app starts and stops.

The signaling layer owns HTTP and permissions; it asks this service for data.
This service observes the media core through its event bus and its read
interface (``Participant.stats()``, publications' level meters and taps) and
never changes what the media core does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from typing import Any

from sfu import events
from sfu.server import SfuServer

from . import client_stats, page
from . import metrics as prometheus
from . import report as reports
from .audio_log import AudioDataLogger
from .collector import StatsCollector
from .context import Context
from .findings import evaluate
from .records import PeerRecord
from .settings import DiagnosticsSettings
from .store import PeerStore
from .thresholds import Thresholds
from .timeline import EventRecorder

#: stats intervals over which every live peer's findings are re-evaluated
FINDINGS_ROUNDS = 4


class Diagnostics:
    def __init__(
        self,
        settings: DiagnosticsSettings,
        sfu: SfuServer,
        connections: prometheus.Connections,
    ) -> None:
        self.settings = settings
        self.sfu = sfu
        self.thresholds = Thresholds()
        # per-tick samples and per-second levels and client reports alike
        history = math.ceil(settings.stats_history / min(settings.stats_interval, 1.0))
        self.store = PeerStore(settings.timeline_retention, settings.timeline_max_peers)
        self.recorder = EventRecorder(self.store, sfu, history)
        self.collector = StatsCollector(self.store, sfu, settings.stats_interval)
        self.keyframe_requests: Counter[bool] = Counter()
        self.audio_loggers: dict[str, AudioDataLogger] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        #: findings of live peers, re-evaluated a few peers per stats tick
        self.findings = prometheus.FindingsCounts()
        self.registry = prometheus.registry_for(
            prometheus.ServerMetrics(
                connections,
                sfu,
                self.collector,
                self.store,
                self.keyframe_requests,
                self.findings,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self._findings_task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        """Start the periodic stats collector (owned here, stopped by close)."""
        self._unsubscribe = self.sfu.events.subscribe(self._on_event)
        self._task = asyncio.create_task(self.collector.run(), name="stats-collector")
        self._findings_task = asyncio.create_task(
            self._count_findings(), name="findings-counter"
        )

    async def close(self) -> None:
        """Stop every task this service started."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for peer_id in list(self.audio_loggers):
            self._stop_audio_logging(peer_id)
        tasks = [
            t
            for t in (self._task, self._findings_task, *self._stopping)
            if t is not None
        ]
        self._task = self._findings_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, event: events.Event) -> None:
        self.recorder(event)
        match event:
            case events.KeyframeRequested(sent=sent):
                self.keyframe_requests[sent] += 1
            case events.ParticipantLeft():
                self._stop_audio_logging(event.peer_id or "")
                self.findings.forget(event.peer_id or "")
            case events.TrackUnpublished(source="microphone"):
                self._stop_audio_logging(event.peer_id or "")

    # --- fed by signaling --------------------------------------------------------

    def note(self, peer_id: str, kind: str, **detail: Any) -> None:
        """What signaling saw of this peer, for its timeline: an ``error``
        sent, a socket lost, a resume."""
        self.recorder.note(peer_id, kind, **detail)

    def client_report(self, peer_id: str, report: dict[str, Any]) -> None:
        """A client ``stats`` message; raises ValueError when malformed."""
        record = self.store.live.get(peer_id)
        if record is None:
            raise client_stats.ClientStatsError("this peer is not diagnosed")
        now = time.time()
        client_stats.check_rate(record.client[-1] if record.client else None, now)
        record.client.append(
            client_stats.parse(report, now, self.settings.client_stats_bytes)
        )

    # --- read by the HTTP API ----------------------------------------------------

    def owner_of(self, peer_id: str) -> str | None:
        """The user id of a live or recently departed peer, else None."""
        record = self.store.get(peer_id)
        return record.user_id if record is not None else None

    def peers(self) -> list[dict[str, Any]]:
        return [record.summary() for record in self.store.all()]

    def _record(self, peer_id: str) -> PeerRecord:
        record = self.store.get(peer_id)
        if record is None:
            raise LookupError(f"unknown peer {peer_id}")
        return record

    def stats(self, peer_id: str) -> dict[str, Any]:
        record = self._record(peer_id)
        return {
            "peer_id": peer_id,
            "live": record.live,
            "interval": self.settings.stats_interval,
            "latest": (
                {"t": record.latest_t, "stats": record.latest}
                if record.latest_t is not None
                else None
            ),
            "history": [
                {
                    "t": round(s.t, 3),
                    "state": s.state,
                    "uplink": s.uplink.rates() if s.uplink is not None else None,
                    "downlink": s.downlink.rates(),
                    "delivered_packets": s.delivered,
                }
                for s in record.samples
            ],
            "levels": [
                {"t": round(p.t, 3), "max_dbov": p.max_dbov, "mean_dbov": p.mean_dbov}
                for p in record.levels
            ],
            "client": record.client[-1].as_dict() if record.client else None,
        }

    def _context(self, record: PeerRecord) -> Context:
        return reports.context_of(record, self.store, self.sfu, self.thresholds)

    def report(self, peer_id: str) -> dict[str, Any]:
        return reports.build(self._context(self._record(peer_id)))

    def report_html(self, peer_id: str) -> str:
        return page.render(self.report(peer_id), self.thresholds)

    async def _count_findings(self) -> None:
        """Re-evaluate every live peer's findings once per ``FINDINGS_ROUNDS``
        stats intervals, a share of the peers per interval: /metrics then
        reads a sum, whatever the number of peers."""
        queue: list[str] = []
        share = 0
        while True:
            await asyncio.sleep(self.settings.stats_interval)
            if not queue:
                queue = list(self.store.live)
                share = math.ceil(len(queue) / FINDINGS_ROUNDS)
            for peer_id in queue[:share]:
                record = self.store.live.get(peer_id)
                if record is not None:
                    found = evaluate(self._context(record))
                    self.findings.put(
                        peer_id, Counter((f.code, f.severity) for f in found)
                    )
            del queue[:share]

    def set_audio_logging(self, peer_id: str, enabled: bool) -> None:
        """Raises LookupError when the peer publishes no microphone."""
        if not enabled:
            self._stop_audio_logging(peer_id)
            return
        participant = self.sfu.participants.get(peer_id)
        pub = participant.publish.by_source("microphone") if participant else None
        if pub is None:
            raise LookupError(f"peer {peer_id} publishes no microphone")
        current = self.audio_loggers.get(peer_id)
        if current is not None and current.publication is pub:
            return
        self._stop_audio_logging(peer_id)
        logger = self.audio_loggers[peer_id] = AudioDataLogger(peer_id, pub)
        logger.start()
        self._mark_audio_logging(peer_id, True)

    def _stop_audio_logging(self, peer_id: str) -> None:
        logger = self.audio_loggers.pop(peer_id, None)
        if logger is None:
            return
        task = logger.stop()
        if task is not None and not task.done():
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._mark_audio_logging(peer_id, False)

    def _mark_audio_logging(self, peer_id: str, enabled: bool) -> None:
        record = self.store.get(peer_id)
        if record is not None:
            record.audio_logging = enabled
            record.add(time.time(), "audio_logging", enabled=enabled)

    def metrics(self) -> tuple[bytes, str]:
        return prometheus.render(self.registry)
