"""What a load run measured: joins, subscriptions, server samples, and the
verdict against its bounds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .scenario import LoadOptions

# --- records ----------------------------------------------------------------------


@dataclass
class JoinRecord:
    user: str
    channel: str
    peer_id: str | None
    join_ms: float | None  # socket opened -> joined
    publish_ms: float | None  # joined -> publish answer applied
    error: str | None = None


@dataclass
class Subscription:
    """One listener's view of one publisher's source over the window."""

    listener: str
    publisher: str
    source: str
    expected: int
    received: int
    arrived: bool
    #: longest silence between arrivals (audio), window edges included
    max_gap_ms: float | None = None
    kbps: float = 0.0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def loss(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0


@dataclass
class ServerSample:
    cpu_percent: float | None = None
    rss_mib: float | None = None
    peak_rss_mib: float | None = None
    forwarded_per_s: float | None = None
    fanout_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    participants: int | None = None


@dataclass
class LoadResult:
    options: LoadOptions
    joins: list[JoinRecord]
    subscriptions: list[Subscription]
    latencies_ms: list[float]
    seconds: float
    server: ServerSample
    clients_cpu_percent: float | None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def audio(self) -> list[Subscription]:
        return [s for s in self.subscriptions if s.source == "microphone"]

    @property
    def expected(self) -> int:
        return sum(s.expected for s in self.audio())

    @property
    def received(self) -> int:
        return sum(min(s.received, s.expected) for s in self.audio())

    @property
    def loss(self) -> float | None:
        """Percent of the expected audio packets lost (None: none expected)."""
        if not self.expected:
            return None
        return 100.0 * (self.expected - self.received) / self.expected

    @property
    def worst_loss(self) -> float:
        return max((s.loss for s in self.audio()), default=0.0)

    @property
    def worst_gap_ms(self) -> float | None:
        gaps = [s.max_gap_ms for s in self.audio() if s.max_gap_ms is not None]
        return max(gaps, default=None)

    def latency(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def join_ms(self, q: float) -> float | None:
        return percentile([j.join_ms for j in self.joins if j.join_ms is not None], q)

    def publish_ms(self, q: float) -> float | None:
        return percentile(
            [j.publish_ms for j in self.joins if j.publish_ms is not None], q
        )

    def judge(self) -> None:
        """Fill ``failures`` from the bounds and the joins."""
        o = self.options
        failed = [j for j in self.joins if j.error]
        if failed:
            self.failures.append(
                f"{len(failed)} of {len(self.joins)} joins failed "
                f"(first: {failed[0].user}: {failed[0].error})"
            )
        missing = [s for s in self.subscriptions if not s.arrived]
        if missing:
            self.failures.append(
                f"{len(missing)} subscriptions never arrived (first: "
                f"{missing[0].listener} <- {missing[0].publisher} {missing[0].source})"
            )
        if self.loss is None:
            self.failures.append("no audio subscription was measured")
            return
        if self.loss > o.max_loss:
            self.failures.append(f"loss {self.loss:.3f} % > {o.max_loss} %")
        p99 = self.latency(0.99)
        if p99 is None or p99 > o.max_p99_ms:
            self.failures.append(f"latency p99 {fmt(p99)} ms > {o.max_p99_ms} ms")

    def summary(self) -> str:
        o, s = self.options, self.server
        joined = sum(1 for j in self.joins if not j.error)
        audio = self.audio()
        screens = [x for x in self.subscriptions if x.source == "screen"]
        publishers = o.per_channel if o.publishers is None else o.publishers
        rows = [
            ("participants joined", f"{joined} / {len(self.joins)}"),
            (
                "join p50 / p99 ms",
                f"{fmt(self.join_ms(0.5))} / {fmt(self.join_ms(0.99))}",
            ),
            (
                "publish p50 / p99 ms",
                f"{fmt(self.publish_ms(0.5))} / {fmt(self.publish_ms(0.99))}",
            ),
            ("audio subscriptions", str(len(audio))),
            ("audio packets expected / received", f"{self.expected} / {self.received}"),
            (
                "audio loss % (worst subscription)",
                f"{fmt(self.loss, 3)} ({fmt(self.worst_loss, 2)})",
            ),
            ("longest audio gap ms", fmt(self.worst_gap_ms)),
            (
                "latency p50 / p99 / max ms",
                f"{fmt(self.latency(0.5), 2)} / {fmt(self.latency(0.99), 2)} / "
                f"{fmt(self.latency(1.0), 2)}",
            ),
        ]
        if screens:
            rows += [
                ("screen subscriptions", str(len(screens))),
                (
                    "screen loss % (worst)",
                    f"{fmt(percent(screens), 3)} "
                    f"({fmt(max(x.loss for x in screens), 2)})",
                ),
                (
                    "screen kbit/s per viewer (min)",
                    fmt(min(x.kbps for x in screens), 0),
                ),
            ]
        rows += [
            ("server CPU %", fmt(s.cpu_percent)),
            ("server participants at the end", fmt(s.participants, 0)),
            ("server RSS / peak MiB", f"{fmt(s.rss_mib)} / {fmt(s.peak_rss_mib)}"),
            ("server forwarded pkt/s", fmt(s.forwarded_per_s, 0)),
            (
                "server fan-out p99 / loop lag p99 ms",
                f"{fmt(s.fanout_p99_ms, 3)} / {fmt(s.loop_lag_p99_ms, 1)}",
            ),
            ("client processes CPU %", fmt(self.clients_cpu_percent)),
            (
                "result",
                "PASS" if self.ok else "FAIL: " + "; ".join(self.failures),
            ),
        ]
        width = max(len(name) for name, _ in rows)
        head = (
            f"miscord-sfu loadtest: {o.channels} channel(s) × {o.per_channel} "
            f"({publishers} publishing, {o.screens} sharing a screen) over "
            f"{o.processes} process(es), {self.seconds:.1f} s measured; bounds: "
            f"loss ≤ {o.max_loss} %, latency p99 ≤ {o.max_p99_ms} ms"
        )
        lines = [head, ""] + [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": self.failures,
            "participants": len(self.joins),
            "joined": sum(1 for j in self.joins if not j.error),
            "join_ms": {"p50": self.join_ms(0.5), "p99": self.join_ms(0.99)},
            "publish_ms": {"p50": self.publish_ms(0.5), "p99": self.publish_ms(0.99)},
            "expected": self.expected,
            "received": self.received,
            "loss_percent": self.loss,
            "worst_loss_percent": self.worst_loss,
            "worst_gap_ms": self.worst_gap_ms,
            "latency_ms": {
                "p50": self.latency(0.5),
                "p99": self.latency(0.99),
                "max": self.latency(1.0),
            },
            "seconds": self.seconds,
            "server": asdict(self.server),
            "clients_cpu_percent": self.clients_cpu_percent,
        }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def percent(subscriptions: list[Subscription]) -> float | None:
    expected = sum(s.expected for s in subscriptions)
    if not expected:
        return None
    return 100.0 * sum(s.lost for s in subscriptions) / expected


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
