"""The coordinator of a load run: client processes, the server's debug
routes, tokens, and the run itself (join, wait until everyone hears
everyone, measure a window, collect)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

from ..tokens import issue
from .report import JoinRecord, LoadResult, ServerSample, Subscription, fmt
from .scenario import (
    AUDIO_RATE,
    DRAIN,
    LATENCY_SAMPLES,
    LoadError,
    LoadOptions,
    Spec,
    plan,
    users,
)

# --- the coordinator ----------------------------------------------------------------


class WorkerProcess:
    """One client process (``python -m miscord_client.load.worker``): a request
    is one JSON line in, one JSON line out, each bounded by a timeout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "miscord_client.load.worker",
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
            user: issue(options.secret, user, [channel], ttl=3600, name=user)
            for user, channel in users(options)
        }
        support = options.support_token or issue(
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
    support = options.support_token
    if not support:
        # a development login gives support tokens only with --dev-support;
        # without one the run goes on, without the server's debug samples
        with contextlib.suppress(LoadError):
            support = await dev_login(f"{options.prefix}-support", "support")
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
