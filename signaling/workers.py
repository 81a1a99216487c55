"""The worker processes of one node (``serve --workers N``) and which holds
which channel.

Each worker is a whole server with its own media (``media_worker``) on a Unix
socket; the front relays sockets to it and asks it what it holds once a second
(``/api/channels``, with a support token the front mints). A new channel goes
to the live worker carrying the fewest streams. A worker that exits is
reported (``on_death``: the front closes its sockets with 1011) and replaced;
its channels go wherever the next join puts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from diagnostics import logs
from sfu.rtc.ports import PortRange
from sfu.tasks import TaskGroup

from . import auth
from .config import Settings
from .media_worker import WorkerSpec

log = logs.get("debug")

POLL = 1.0  # seconds between asking each worker what it holds
START_TIMEOUT = 60.0
#: a channel placed this recently is kept even if its worker does not list it
#: yet (its first join is under way)
PLACING = 5.0


@dataclass(eq=False)
class Worker:
    index: int
    path: str
    process: asyncio.subprocess.Process
    http: aiohttp.ClientSession
    started_at: float = field(default_factory=time.monotonic)
    alive: bool = True
    #: what it held at the last poll: channel -> its participants' views
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: channels placed on it since that poll
    placed: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return "http://worker/ws"

    def __str__(self) -> str:
        return f"worker {self.index} (pid {self.pid})"

    @property
    def streams(self) -> int:
        return sum(
            len(p.get("tracks", [])) for ps in self.channels.values() for p in ps
        )

    def load(self) -> tuple[int, int, int]:
        return (self.streams, len(self.channels) + self.placed, self.index)

    def view(self, node: str) -> dict[str, Any]:
        return {
            "node": node,
            "worker": self.index,
            "pid": self.pid,
            "channels": sorted(self.channels),
            "participants": sum(len(ps) for ps in self.channels.values()),
        }


def worker_settings(settings: Settings, index: int, count: int) -> Settings:
    """A worker's settings: the node's, with its share of the media ports."""
    own = copy.copy(settings)  # not replace(): that would make a new secret
    own.workers, own.redis_url, own.node_url = "1", "", ""
    if settings.rtc_ports:  # Settings refused a range under 2 per worker
        ports = PortRange.parse(settings.rtc_ports)
        share = len(ports) // count
        low = ports.low + index * share
        own.rtc_ports = str(PortRange(low, low + share - 1))
    return own


class WorkerPool:
    """Starts, watches, asks and replaces the workers; places channels.

    ``in_use(channel)``: whether the front still relays a socket of it (an
    events watcher holds a channel the worker does not list)."""

    def __init__(
        self,
        settings: Settings,
        on_death: Callable[[Worker], None],
        in_use: Callable[[str], bool],
    ) -> None:
        self.settings = settings
        self.count = settings.worker_count()
        self.on_death = on_death
        self.in_use = in_use
        self.workers: dict[int, Worker] = {}
        #: channel -> the worker holding it, and when it was placed
        self.placement: dict[str, tuple[Worker, float]] = {}
        self.replaced = 0
        self.tasks = TaskGroup("workers")
        self._dir = tempfile.mkdtemp(prefix="miscord-workers-")
        self._token = ""
        self._token_until = 0.0
        self.closing = False

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(i) for i in range(self.count)))
        self.tasks.spawn(self._poll_forever(), "poll")

    def live(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive]

    def place(self, channel: str) -> Worker | None:
        """The worker holding ``channel``; a new channel goes to the least
        loaded live worker (None: none is up)."""
        held = self.holder(channel)
        if held is not None:
            return held
        worker = self.least_loaded()
        if worker is not None:
            worker.placed += 1
            self.placement[channel] = (worker, time.monotonic())
        return worker

    def holder(self, channel: str) -> Worker | None:
        held = self.placement.get(channel)
        return held[0] if held is not None and held[0].alive else None

    def least_loaded(self) -> Worker | None:
        return min(self.live(), key=Worker.load, default=None)

    # --- the processes ----------------------------------------------------------------

    async def _spawn(self, index: int) -> None:
        path = f"{self._dir}/worker-{index}-{time.monotonic_ns()}.sock"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "signaling.media_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # a terminal's Ctrl-C reaches the front alone, which drains them
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        settings = worker_settings(self.settings, index, self.count)
        process.stdin.write(pickle.dumps(WorkerSpec(settings, index, path)))
        await process.stdin.drain()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuntimeError(f"worker {index} did not start")
        http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
        worker = Worker(index, path, process, http)
        self.workers[index] = worker
        logs.success(log, "worker %d serving (pid %d)", index, worker.pid)
        self.tasks.spawn(self._watch(worker), f"watch:{index}")

    async def _watch(self, worker: Worker) -> None:
        code = await worker.process.wait()
        worker.alive = False
        await worker.http.close()
        if self.closing:
            return
        log.error(
            "worker %d (pid %d) exited with %s: its %d channel(s) are lost",
            worker.index,
            worker.pid,
            code,
            len(worker.channels),
        )
        for channel, (holder, _) in list(self.placement.items()):
            if holder is worker:
                del self.placement[channel]
        self.on_death(worker)
        # one that keeps dying right after its start is not restarted in a loop
        young = time.monotonic() - worker.started_at < 5.0
        await asyncio.sleep(2.0 if young else 0.1)
        while not self.closing:
            try:
                await self._spawn(worker.index)
                self.replaced += 1
                return
            except (RuntimeError, OSError) as exc:
                log.error("replacing worker %d failed: %s", worker.index, exc)
                await asyncio.sleep(2.0)

    # --- asking them ------------------------------------------------------------------

    def support_token(self) -> str:
        """A support token for the workers' own routes, renewed hourly."""
        now = time.time()
        if now > self._token_until:
            self._token = auth.issue(
                self.settings.secret, "front", ["*"], role="support", ttl=7200
            )
            self._token_until = now + 3600
        return self._token

    async def get(self, worker: Worker, path: str) -> Any:
        """A worker's JSON answer to ``path`` (as support)."""
        async with worker.http.get(
            "http://worker" + path,
            headers={"Authorization": f"Bearer {self.support_token()}"},
            timeout=aiohttp.ClientTimeout(total=2.0),
        ) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            await asyncio.gather(*(self._poll(w) for w in self.live()))
            self._forget_channels()

    async def _poll(self, worker: Worker) -> None:
        try:
            listed = await self.get(worker, "/api/channels")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("worker %d did not answer: %s", worker.index, exc)
            return
        worker.channels = {c["channel"]: c["participants"] for c in listed}
        worker.placed = 0

    def _forget_channels(self) -> None:
        """Drop channels their worker no longer holds and nobody watches."""
        now = time.monotonic()
        for channel, (worker, placed_at) in list(self.placement.items()):
            if (
                channel not in worker.channels
                and now - placed_at > PLACING
                and not self.in_use(channel)
            ):
                del self.placement[channel]

    async def drain(self) -> None:
        """SIGTERM to every worker (each drains its calls) and wait for them."""
        self.closing = True  # none is replaced from now on
        for worker in self.live():
            with contextlib.suppress(ProcessLookupError):
                worker.process.terminate()
        await asyncio.gather(*(w.process.wait() for w in self.live()))

    async def close(self) -> None:
        self.closing = True
        await self.tasks.close()
        for worker in self.workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            await worker.http.close()
        shutil.rmtree(self._dir, ignore_errors=True)
