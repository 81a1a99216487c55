"""``miscord-sfu loadtest``: synthetic participants against a running server.

Like LiveKit's load tester: N participants spread over several client processes
(``--processes``) and channels, audio publishers, listeners and optional screen
sharers. After everyone hears everyone (or a deadline) and a warm-up, it
measures for ``--duration`` seconds and reports join times, loss per
subscription, forwarding latency, the longest gap in each received stream and
the server's CPU and memory; it exits 1 when a bound is crossed, 2 when the run
itself failed (unreachable server, dead client process, a wait that timed out).

Clients stay cheap (``signaling/loadclient.py``): publishers send stamped fake
Opus, receivers count RTP and never decode. Loss is exact rather than estimated
from sequence numbers: every audio payload carries its send time, so a
subscription expects the packets its publisher stamped inside the window
``[start, end)`` and receives those whose stamp falls inside it; a stream that
stalls or never arrives shows as loss. Every wait has a deadline, so a broken
server fails the run instead of hanging it.

The coordinator (this process) needs no aiortc: the media code is imported only
in the worker processes, which keeps ``miscord-sfu token`` fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import psutil

from . import auth

if TYPE_CHECKING:
    from aiortc.rtp import RtpPacket

    from .client import RemoteTrack, VoiceClient
    from .loadclient import Counter

AUDIO_RATE = 50  # packets per second of one stamped Opus stream (20 ms)
NEVER = (math.inf, math.inf)
#: pooled latency samples kept over a whole run; more are subsampled
LATENCY_SAMPLES = 200_000
#: seconds after the window's end for packets still in flight
DRAIN = 0.5
#: stamps remembered per stream to take back those past a window's end (10 s)
RECENT_STAMPS = 10 * AUDIO_RATE


class LoadError(RuntimeError):
    """The run could not be carried out (as opposed to a server out of bounds)."""


# --- the plan ---------------------------------------------------------------------


@dataclass
class Spec:
    """One synthetic participant."""

    user: str
    channel: str
    token: str
    microphone: bool
    screen: bool
    process: int


@dataclass
class LoadOptions:
    url: str
    secret: str = ""
    support_token: str = ""
    processes: int = 2
    channels: int = 1
    per_channel: int = 4
    #: audio publishers per channel (None: everyone); the rest only listen
    publishers: int | None = None
    screens: int = 0
    screen_kbps: int = 1500
    duration: float = 10.0
    warmup: float = 2.0
    ready_timeout: float | None = None
    join_timeout: float = 20.0
    join_concurrency: int = 4
    max_loss: float = 0.5
    max_p99_ms: float = 20.0
    server_pid: int | None = None
    ice_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    prefix: str = field(default_factory=lambda: "load-" + secrets.token_hex(3))

    def validate(self) -> None:
        if min(self.processes, self.channels, self.per_channel) < 1:
            raise LoadError("--processes, --channels and --per-channel must be >= 1")
        if self.publishers is not None and not 0 <= self.publishers <= self.per_channel:
            raise LoadError("--publishers must be between 0 and --per-channel")
        if not 0 <= self.screens <= self.per_channel:
            raise LoadError("--screens must be between 0 and --per-channel")
        if self.duration <= 0:
            raise LoadError("--duration must be positive")


def plan(options: LoadOptions, tokens: dict[str, str]) -> list[Spec]:
    """Participants, channel by channel; round-robin over processes so that
    every channel spans processes and joins interleave across channels."""
    publishers = (
        options.per_channel if options.publishers is None else options.publishers
    )
    specs = []
    for i in range(options.per_channel):
        for c in range(options.channels):
            user = f"{options.prefix}-c{c}-p{i}"
            specs.append(
                Spec(
                    user=user,
                    channel=f"{options.prefix}-c{c}",
                    token=tokens[user],
                    microphone=i < publishers,
                    screen=i < options.screens,
                    process=len(specs) % options.processes,
                )
            )
    return specs


def users(options: LoadOptions) -> list[tuple[str, str]]:
    """(user, channel) of every participant of the plan, for minting tokens."""
    return [
        (f"{options.prefix}-c{c}-p{i}", f"{options.prefix}-c{c}")
        for i in range(options.per_channel)
        for c in range(options.channels)
    ]


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


# --- the coordinator ----------------------------------------------------------------


class WorkerProcess:
    """One client process (``python -m signaling.loadtest --worker``): a request
    is one JSON line in, one JSON line out, each bounded by a timeout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "signaling.loadtest",
            "--worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,  # a report line carries latency samples
        )
        return cls(proc)

    async def request(self, message: dict[str, Any], timeout: float) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            await asyncio.wait_for(self.proc.stdin.drain(), timeout)
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise LoadError(
                f"client process {self.proc.pid} did not answer {message['cmd']!r} "
                f"within {timeout:.0f} s ({type(exc).__name__})"
            ) from None
        if not line:
            raise LoadError(f"client process {self.proc.pid} exited")
        try:
            reply = json.loads(line)
        except ValueError:
            raise LoadError(f"client process {self.proc.pid}: {line[:200]!r}") from None
        if "error" in reply:
            raise LoadError(f"client process {self.proc.pid}: {reply['error']}")
        return reply

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        """Leave every participant, then end the process (killed if it lingers)."""
        if self.proc.returncode is None:
            with contextlib.suppress(LoadError, OSError):
                await self.request({"cmd": "leave", "timeout": timeout}, timeout + 5)
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.kill()
            await self.proc.wait()


class Server:
    """What the coordinator reads of the server: HTTP debug routes (with a
    support token) and, when its process is known, CPU and RSS."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, support_token: str, pid: int | None
    ) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.support_token = support_token
        self.ps = psutil.Process(pid) if pid else None

    async def get(self, path: str, timeout: float = 5.0) -> Any:
        headers = (
            {"Authorization": f"Bearer {self.support_token}"}
            if self.support_token
            else {}
        )
        try:
            async with self.http.get(
                self.url + path,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status != 200:
                    return None
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    def cpu_seconds(self) -> float | None:
        if self.ps is None:
            return None
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss_mib(self) -> float | None:
        return self.ps.memory_info().rss / 2**20 if self.ps else None


def local_server_pid(url: str) -> int | None:
    """The process listening on a loopback URL's port, if this machine has it."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                return conn.pid
    return None


async def mint_tokens(
    http: aiohttp.ClientSession, options: LoadOptions
) -> tuple[dict[str, str], str]:
    """Member tokens for every participant and a support token: signed with the
    server's secret, or from its development login (a loopback server started
    without ``--secret``)."""
    if options.secret:
        tokens = {
            user: auth.issue(options.secret, user, [channel], ttl=3600, name=user)
            for user, channel in users(options)
        }
        support = options.support_token or auth.issue(
            options.secret, f"{options.prefix}-support", ["*"], role="support"
        )
        return tokens, support

    async def dev_login(user: str, role: str = "member") -> str:
        try:
            async with http.post(
                options.url.rstrip("/") + "/api/dev-login",
                json={"user": user, "role": role},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    raise LoadError(
                        "give --secret (or SFU_SECRET): the server has no development "
                        f"login (HTTP {resp.status})"
                    )
                return str((await resp.json())["token"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LoadError(f"cannot reach {options.url}: {exc!r}") from None

    tokens = {user: await dev_login(user) for user, _ in users(options)}
    support = options.support_token or await dev_login(
        f"{options.prefix}-support", "support"
    )
    return tokens, support


Progress = Callable[[str], None]


async def run(options: LoadOptions, progress: Progress | None = None) -> LoadResult:
    """Join, warm up, measure, leave; returns the judged result.

    Raises ``LoadError`` when the run itself fails.
    """
    options.validate()
    say = progress or (lambda line: None)
    async with aiohttp.ClientSession() as http:
        if await Server(http, options.url, "", None).get("/healthz") is None:
            raise LoadError(f"no server answers {options.url}/healthz")
        tokens, support = await mint_tokens(http, options)
        pid = options.server_pid or local_server_pid(options.url)
        server = Server(http, options.url, support, pid)
        specs = plan(options, tokens)
        workers = await asyncio.gather(
            *(WorkerProcess.start() for _ in range(options.processes))
        )
        try:
            return await Run(options, specs, workers, server, say).execute()
        finally:
            await asyncio.gather(*(w.stop() for w in workers))


class Run:
    """One load run over started worker processes (see ``run``)."""

    def __init__(
        self,
        options: LoadOptions,
        specs: list[Spec],
        workers: list[WorkerProcess],
        server: Server,
        say: Progress,
    ) -> None:
        self.options = options
        self.specs = specs
        self.workers = workers
        self.server = server
        self.say = say
        self.joins: list[JoinRecord] = []
        self.start = math.inf

    async def all(self, message: dict[str, Any], timeout: float) -> list[Any]:
        return await asyncio.gather(
            *(w.request(message, timeout) for w in self.workers)
        )

    async def execute(self) -> LoadResult:
        o = self.options
        await self.join()
        await self.wait_ready()
        await asyncio.sleep(o.warmup)
        start = await self.open_window(o.duration)
        end = start + o.duration
        server, clients_cpu = await self.measure(start, end)
        subscriptions, latencies = await self.close_window(end)
        result = LoadResult(
            options=o,
            joins=self.joins,
            subscriptions=subscriptions,
            latencies_ms=latencies,
            seconds=end - start,
            server=server,
            clients_cpu_percent=clients_cpu,
        )
        result.judge()
        return result

    async def open_window(self, duration: float = math.inf) -> float:
        """Start measuring in 0.2 s, for ``duration`` or until ``close_window``;
        returns the start (wall clock, as in the stamps)."""
        self.start = time.time() + 0.2
        await self.all(
            {"cmd": "window", "start": self.start, "end": self.start + duration}, 10
        )
        await asyncio.sleep(max(0.0, self.start - time.time()))
        return self.start

    async def close_window(
        self, end: float | None = None
    ) -> tuple[list[Subscription], list[float]]:
        """End the window (now by default), let packets in flight arrive, then
        collect every subscription and the latency samples."""
        end = time.time() if end is None else end
        await self.all({"cmd": "end", "end": end}, 10)
        await asyncio.sleep(max(0.0, end + DRAIN - time.time()))
        reports = await self.all({"cmd": "report"}, 30)
        return self.collect(reports, self.start, end)

    async def join(self) -> None:
        o = self.options
        most = max(
            sum(s.process == i for s in self.specs) for i in range(len(self.workers))
        )
        timeout = o.join_timeout * (math.ceil(most / o.join_concurrency) + 1) + 10
        self.say(
            f"joining {len(self.specs)} participants over {len(self.workers)} processes"
        )
        started = time.monotonic()
        replies = await asyncio.gather(
            *(
                w.request(
                    {
                        "cmd": "join",
                        "url": o.url,
                        "ice_hosts": o.ice_hosts,
                        "participants": [
                            asdict(s) for s in self.specs if s.process == index
                        ],
                        "concurrency": o.join_concurrency,
                        "timeout": o.join_timeout,
                        "screen_kbps": o.screen_kbps,
                        "latency_every": self.latency_every(),
                    },
                    timeout,
                )
                for index, w in enumerate(self.workers)
            )
        )
        self.joins = [JoinRecord(**j) for reply in replies for j in reply["joined"]]
        failed = sum(1 for j in self.joins if j.error)
        if failed == len(self.joins):
            raise LoadError(f"no participant could join: {self.joins[0].error}")
        self.say(
            f"joined {len(self.joins) - failed} of {len(self.joins)} in "
            f"{time.monotonic() - started:.1f} s"
        )

    def latency_every(self) -> int:
        """Keep about LATENCY_SAMPLES latency samples over the whole window."""
        o = self.options
        publishers = o.per_channel if o.publishers is None else o.publishers
        streams = o.channels * publishers * (o.per_channel - 1)
        return max(1, math.ceil(streams * AUDIO_RATE * o.duration / LATENCY_SAMPLES))

    def expected_streams(self) -> dict[str, tuple[int, int]]:
        """(audio, screen) streams each joined participant should receive."""
        live = {j.user for j in self.joins if not j.error}
        joined = [s for s in self.specs if s.user in live]
        expected = {}
        for spec in joined:
            others = [o for o in joined if o.channel == spec.channel and o is not spec]
            expected[spec.user] = (
                sum(o.microphone for o in others),
                sum(o.screen for o in others),
            )
        return expected

    async def wait_ready(self) -> None:
        """Until every participant receives every stream it should, or the
        deadline (missing streams then count as lost)."""
        o = self.options
        expected = self.expected_streams()
        timeout = o.ready_timeout or 30 + 0.2 * len(self.specs)
        deadline = time.monotonic() + timeout
        while True:
            replies = await self.all({"cmd": "streams"}, 10)
            seen = {u: tuple(n) for r in replies for u, n in r["streams"].items()}
            ready = sum(
                1
                for user, want in expected.items()
                if seen.get(user, (0, 0))[0] >= want[0]
                and seen.get(user, (0, 0))[1] >= want[1]
            )
            if ready == len(expected):
                self.say(f"all {ready} participants receive every stream")
                return
            if time.monotonic() > deadline:
                self.say(
                    f"only {ready} of {len(expected)} participants receive every "
                    f"stream after {timeout:.0f} s; measuring anyway"
                )
                return
            await asyncio.sleep(0.5)

    async def measure(
        self, start: float, end: float
    ) -> tuple[ServerSample, float | None]:
        """Sample the server and the clients while the window runs; print progress."""
        server, workers = self.server, self.workers
        await server.get("/api/debug/forwarding?reset=1")
        before = await server.get("/api/debug/forwarding")
        cpu0, clients0, t0 = (
            server.cpu_seconds(),
            sum(w.cpu_seconds() for w in workers),
            time.monotonic(),
        )
        peak = server.rss_mib()
        last_cpu, last_t, last_received = cpu0, t0, 0
        fan = self.fanout()
        while (now := time.time()) < end:
            await asyncio.sleep(min(1.0, end - now))
            replies = await self.all({"cmd": "progress"}, 10)
            sent = {p: n for r in replies for p, n in r["sent"].items()}
            received = sum(r["received"] for r in replies)
            expected = sum(n * fan.get(p, 0) for p, n in sent.items())
            t = time.monotonic()
            cpu, rss = server.cpu_seconds(), server.rss_mib()
            if rss is not None:
                peak = max(peak or 0.0, rss)
            loss = 100 * (1 - received / expected) if expected else None
            cpu_pct = (
                100 * (cpu - last_cpu) / (t - last_t)
                if cpu is not None and last_cpu is not None
                else None
            )
            self.say(
                f"t={min(time.time(), end) - start:5.1f}/{end - start:.0f} s  "
                f"recv {(received - last_received) / (t - last_t):7.0f} pkt/s  "
                f"loss ~{fmt(loss, 2)} %"  # packets in flight count as lost here
                f"  server CPU {fmt(cpu_pct, 0)} %  RSS {fmt(rss, 0)} MiB"
            )
            last_cpu, last_t, last_received = cpu, t, received
        elapsed = time.monotonic() - t0
        cpu1 = server.cpu_seconds()
        after = await server.get("/api/debug/forwarding")
        health = await server.get("/healthz")
        sample = ServerSample(
            cpu_percent=100 * (cpu1 - cpu0) / elapsed
            if cpu0 is not None and cpu1 is not None
            else None,
            rss_mib=server.rss_mib(),
            peak_rss_mib=peak,
            participants=health.get("participants") if health else None,
        )
        if before and after:
            sample.forwarded_per_s = (
                after["packets_forwarded"] - before["packets_forwarded"]
            ) / elapsed
            sample.fanout_p99_ms = (after.get("fanout_ms") or {}).get("p99")
            sample.loop_lag_p99_ms = (after.get("loop_lag_ms") or {}).get("p99")
        clients = sum(w.cpu_seconds() for w in workers) - clients0
        return sample, 100 * clients / elapsed

    def fanout(self) -> dict[str, int]:
        """Listeners per publishing peer (for the progress line's loss)."""
        peers = self.peer_ids()
        live = [s for s in self.specs if s.user in peers]
        return {
            peers[s.user]: sum(1 for o in live if o.channel == s.channel) - 1
            for s in live
            if s.microphone
        }

    def peer_ids(self) -> dict[str, str]:
        return {j.user: j.peer_id for j in self.joins if j.peer_id and not j.error}

    def collect(
        self, reports: list[dict[str, Any]], start: float, end: float
    ) -> tuple[list[Subscription], list[float]]:
        """Every subscription the plan implies, with what its listener got;
        one that never arrived counts as entirely lost."""
        peers = self.peer_ids()
        sent = {p: n for r in reports for p, n in r["sent"].items()}
        got = {
            (r["listener"], r["publisher"], r["source"]): r
            for report in reports
            for r in report["streams"]
        }
        live = [s for s in self.specs if s.user in peers]
        subscriptions = []
        for listener in live:
            for publisher in live:
                if publisher is listener or publisher.channel != listener.channel:
                    continue
                for source, on in (
                    ("microphone", publisher.microphone),
                    ("screen", publisher.screen),
                ):
                    if not on:
                        continue
                    key = (peers[listener.user], peers[publisher.user], source)
                    stream = got.get(key, {})
                    audio = source == "microphone"
                    subscriptions.append(
                        Subscription(
                            listener=listener.user,
                            publisher=publisher.user,
                            source=source,
                            # audio: stamped in the window by its publisher;
                            # video: by sequence numbers since the window began
                            expected=sent.get(key[1], 0)
                            if audio
                            else stream.get("expected", 0),
                            received=stream.get("received", 0),
                            arrived=bool(stream),
                            max_gap_ms=stream.get("max_gap_ms", 1000 * (end - start))
                            if audio
                            else None,
                            kbps=stream.get("kbps", 0.0),
                        )
                    )
        latencies = [x for r in reports for x in r["latencies_ms"]]
        return subscriptions, latencies


# --- the worker process -------------------------------------------------------------


@dataclass
class StampCount:
    """Packets counted by the time their publisher stamped them. A worker learns
    a window's end a moment late, after it may have counted packets stamped
    past it; the recent stamps are kept so that those can be taken back."""

    count: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STAMPS))

    def add(self, stamp: float) -> None:
        self.count += 1
        self.recent.append(stamp)

    def end(self, end: float) -> None:
        kept = [s for s in self.recent if s < end]
        self.count -= len(self.recent) - len(kept)
        self.recent = deque(kept, maxlen=RECENT_STAMPS)


@dataclass
class StreamWindow:
    """Audio packets of one subscription stamped inside the window."""

    stamps: StampCount = field(default_factory=StampCount)
    first_stamp: float | None = None
    last_stamp: float = 0.0
    last_arrival: float | None = None
    max_gap: float = 0.0

    @property
    def received(self) -> int:
        return self.stamps.count

    def add(self, sent: float, now: float) -> None:
        self.stamps.add(sent)
        if self.first_stamp is None:
            self.first_stamp = sent
        self.last_stamp = max(self.last_stamp, sent)
        if self.last_arrival is not None:
            self.max_gap = max(self.max_gap, now - self.last_arrival)
        self.last_arrival = now

    def end(self, end: float) -> None:
        self.stamps.end(end)
        self.last_stamp = max(self.stamps.recent, default=self.first_stamp or 0.0)

    def gap(self, start: float, end: float) -> float:
        """The longest silence, including a late start or an early stop."""
        if self.first_stamp is None:
            return end - start
        return max(self.max_gap, self.first_stamp - start, end - self.last_stamp)


class WindowSink:
    """A ``raw_sink`` for VoiceClient: the loadclient ``Counter`` (streams,
    latency, video loss by sequence numbers) plus, for audio, what arrived of
    the packets stamped inside the window."""

    def __init__(self, counter: Counter) -> None:
        from .loadclient import read_stamp

        self.counter = counter
        self.window = NEVER
        self.audio: dict[str, StreamWindow] = {}  # by publisher peer id
        self._read_stamp = read_stamp

    def __call__(self, remote: RemoteTrack, packet: RtpPacket) -> None:
        self.counter(remote, packet)
        if remote.source != "microphone":
            return
        sent = self._read_stamp(packet.payload)
        if sent is None or not self.window[0] <= sent < self.window[1]:
            return
        stream = self.audio.get(remote.peer_id)
        if stream is None:
            stream = self.audio[remote.peer_id] = StreamWindow()
        stream.add(sent, time.time())

    def counts(self) -> tuple[int, int]:
        """(audio, screen) streams received so far."""
        sources = [source for _, source in self.counter.streams]
        return sources.count("microphone"), sources.count("screen")


class SendTally:
    """Counts the packets a ``StampedAudio`` stamps inside the window, by
    wrapping its ``recv`` (each call becomes one RTP packet)."""

    def __init__(self, track: Any) -> None:
        from .loadclient import read_stamp

        self.window = NEVER
        self.stamps = StampCount()
        self._recv = track.recv
        self._read_stamp = read_stamp
        track.recv = self._recv_counted

    async def _recv_counted(self) -> Any:
        packet = await self._recv()
        sent = self._read_stamp(bytes(packet))
        if sent is not None and self.window[0] <= sent < self.window[1]:
            self.stamps.add(sent)
        return packet


@dataclass
class Member:
    """A participant inside a worker process."""

    spec: Spec
    client: VoiceClient
    sink: WindowSink
    tally: SendTally | None = None


class LoadWorker:
    """The participants of one client process and the commands it answers."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.window = NEVER

    async def join(self, cmd: dict[str, Any]) -> dict[str, Any]:
        semaphore = asyncio.Semaphore(cmd["concurrency"])

        async def one(spec: Spec) -> JoinRecord:
            async with semaphore:
                return await self._join_one(spec, cmd)

        specs = [Spec(**p) for p in cmd["participants"]]
        records = await asyncio.gather(*(one(s) for s in specs))
        return {"joined": [asdict(r) for r in records]}

    async def _join_one(self, spec: Spec, cmd: dict[str, Any]) -> JoinRecord:
        from .client import VoiceClient
        from .loadclient import Counter, StampedAudio, StampedScreen

        sink = WindowSink(Counter(latency_every=cmd["latency_every"]))
        client = VoiceClient(cmd["url"], spec.token, cmd["ice_hosts"], raw_sink=sink)
        member = Member(spec, client, sink)
        record = JoinRecord(spec.user, spec.channel, None, None, None)
        started = time.monotonic()
        try:
            async with asyncio.timeout(cmd["timeout"]):
                joined = await client.join(spec.channel)
                record.peer_id = joined["peer_id"]
                record.join_ms = 1000 * (time.monotonic() - started)
                if spec.microphone or spec.screen:
                    microphone = StampedAudio() if spec.microphone else None
                    if microphone is not None:
                        member.tally = SendTally(microphone)
                    screen = (
                        StampedScreen(bitrate=cmd["screen_kbps"] * 1000)
                        if spec.screen
                        else None
                    )
                    published = time.monotonic()
                    await client.publish(microphone=microphone, screen=screen)
                    record.publish_ms = 1000 * (time.monotonic() - published)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:300]
            await client.close()
            return record
        self.members.append(member)
        return record

    def streams(self) -> dict[str, Any]:
        return {"streams": {m.spec.user: m.sink.counts() for m in self.members}}

    def open_window(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._set_window(cmd["start"], cmd["end"])
        for m in self.members:
            m.sink.audio.clear()
            if m.tally is not None:
                m.tally.stamps = StampCount()
        # sequence-number counts and latencies start with the window too
        delay = max(0.0, cmd["start"] - time.time())
        for m in self.members:
            asyncio.get_running_loop().call_later(delay, m.sink.counter.reset)
        return {"ok": True}

    def end_window(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._set_window(self.window[0], cmd["end"])
        for m in self.members:
            for stream in m.sink.audio.values():
                stream.end(cmd["end"])
            if m.tally is not None:
                m.tally.stamps.end(cmd["end"])
        return {"ok": True}

    def _set_window(self, start: float, end: float) -> None:
        self.window = (start, end)
        for m in self.members:
            m.sink.window = self.window
            if m.tally is not None:
                m.tally.window = self.window

    def progress(self) -> dict[str, Any]:
        return {
            "sent": self._sent(),
            "received": sum(
                s.received for m in self.members for s in m.sink.audio.values()
            ),
        }

    def _sent(self) -> dict[str, int]:
        return {
            m.client.peer_id: m.tally.stamps.count
            for m in self.members
            if m.tally is not None and m.client.peer_id
        }

    def report(self) -> dict[str, Any]:
        start, end = self.window
        counted = max(1e-3, time.time() - start)
        streams, latencies = [], []
        for m in self.members:
            for (publisher, source), count in m.sink.counter.streams.items():
                record = {
                    "listener": m.client.peer_id,
                    "publisher": publisher,
                    "source": source,
                    "kbps": count.bytes * 8 / 1000 / counted,
                }
                if source == "microphone":
                    window = m.sink.audio.get(publisher, StreamWindow())
                    record.update(
                        received=window.received,
                        max_gap_ms=1000 * window.gap(start, end),
                    )
                    latencies.extend(1000 * x for x in count.latencies)
                else:
                    record.update(received=count.packets, expected=count.expected)
                streams.append(record)
        return {"sent": self._sent(), "streams": streams, "latencies_ms": latencies}

    async def leave(self, cmd: dict[str, Any]) -> dict[str, Any]:
        async def one(member: Member) -> None:
            try:
                async with asyncio.timeout(cmd["timeout"]):
                    await member.client.leave()
            except Exception:
                await member.client.close()

        await asyncio.gather(*(one(m) for m in self.members))
        left, self.members = len(self.members), []
        return {"left": left}


async def worker_main() -> None:
    """Answer commands from stdin until ``leave`` or end of input."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    # replies own stdout: anything a library prints goes to stderr instead
    replies, sys.stdout = sys.stdout, sys.stderr
    worker = LoadWorker()
    reader = asyncio.StreamReader(limit=2**26)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "join": worker.join,
        "streams": lambda cmd: worker.streams(),
        "window": worker.open_window,
        "end": worker.end_window,
        "progress": lambda cmd: worker.progress(),
        "report": lambda cmd: worker.report(),
        "leave": worker.leave,
    }
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            reply = handlers[cmd["cmd"]](cmd)
            if asyncio.iscoroutine(reply):
                reply = await reply
        except Exception as exc:
            reply = {"error": f"{cmd.get('cmd')}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), file=replies, flush=True)
        if cmd["cmd"] == "leave":
            return
    await worker.leave({"timeout": 5})


# --- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("url", help="the server, e.g. http://127.0.0.1:8080")
    add(
        "--secret",
        help="server secret to sign tokens [SFU_SECRET]; without it, "
        "the server's development login is used",
    )
    add("--support-token", help="a support token for the debug routes")
    add("--processes", type=int, default=2, help="client processes (default 2)")
    add("--channels", type=int, default=1, help="voice channels (default 1)")
    add("--per-channel", type=int, default=4, help="participants per channel")
    add("--publishers", type=int, help="audio publishers per channel (default all)")
    add("--screens", type=int, default=0, help="screen sharers per channel")
    add("--screen-kbps", type=int, default=1500, help="bitrate of each screen")
    add("--duration", type=float, default=10.0, help="seconds measured")
    add("--warmup", type=float, default=2.0, help="seconds before measuring")
    add(
        "--ready-timeout",
        type=float,
        help="seconds to wait until everyone receives every stream "
        "(default 30 + 0.2 per participant)",
    )
    add("--join-timeout", type=float, default=20.0, help="seconds per join")
    add("--join-concurrency", type=int, default=4, help="joins at once per process")
    add("--max-loss", type=float, default=0.5, help="audio loss bound, percent")
    add("--max-p99-ms", type=float, default=20.0, help="latency p99 bound, ms")
    add(
        "--server-pid",
        type=int,
        help="server process for CPU/RSS (default: found by port on loopback)",
    )
    add(
        "--ice-host",
        action="append",
        dest="ice_hosts",
        help="address clients gather ICE candidates on (default 127.0.0.1)",
    )
    add("--json", dest="json_path", help="also write the result as JSON here")
    add("--quiet", action="store_true", help="no progress lines")


def options_from(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        url=args.url,
        secret=args.secret or os.environ.get("SFU_SECRET", ""),
        support_token=args.support_token or "",
        processes=args.processes,
        channels=args.channels,
        per_channel=args.per_channel,
        publishers=args.publishers,
        screens=args.screens,
        screen_kbps=args.screen_kbps,
        duration=args.duration,
        warmup=args.warmup,
        ready_timeout=args.ready_timeout,
        join_timeout=args.join_timeout,
        join_concurrency=args.join_concurrency,
        max_loss=args.max_loss,
        max_p99_ms=args.max_p99_ms,
        server_pid=args.server_pid,
        ice_hosts=args.ice_hosts or ["127.0.0.1"],
    )


def main(args: argparse.Namespace) -> int:
    """0: within bounds; 1: a bound crossed or joins failed; 2: the run failed."""
    options = options_from(args)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        result = asyncio.run(run(options, say))
    except LoadError as exc:
        print(f"miscord-sfu loadtest: {exc}", file=sys.stderr)
        return 2
    print(result.summary(), flush=True)
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(result.to_json(), out, indent=2)
    return 0 if result.ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        asyncio.run(worker_main())
