"""Shared pieces of the load, soak, fault and abuse tests: the server in its own
process with a census (tests/load_server.py), and calls of load-tool workers
whose audio is measured for loss and gaps (miscord_client/load)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp

from benchmarks.common import ROOT, SECRET, ServerProcess, free_port
from miscord_client.load.coordinator import Run, Server, WorkerProcess
from miscord_client.load.report import Subscription
from miscord_client.load.scenario import LoadOptions, Spec
from signaling import auth

#: census entries that must come back to their starting values
LEAK_KEYS = (
    "participants",
    "channels",
    "connections",
    "by_peer",
    "by_user",
    "by_channel",
    "user_locks",
    "publications",
    "downlinks",
    "peer_tasks",
    "diagnosed_live",
    "tasks",
    "peer_connections",
    "fds",
)


def token(user: str, channels: list[str] | None = None, **claims: Any) -> str:
    return auth.issue(SECRET, user, channels or ["*"], name=user, **claims)


class CensusServer(ServerProcess):
    """The server as its own process, with ``GET /test/census``."""

    @classmethod
    async def start(cls, *args: str) -> CensusServer:  # type: ignore[override]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
        command = [sys.executable, "-m", "tests.load_server", "--port", str(port)]
        # Popen returns at once; ServerProcess's methods expect one
        proc = subprocess.Popen(  # noqa: ASYNC220
            [*command, "--secret", SECRET, "--log-level", "error", *args],
            env=env,
            cwd=ROOT,
        )
        server = cls(proc, f"http://127.0.0.1:{port}")
        await server.healthy()
        return server

    async def healthy(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        return await resp.json()
                except aiohttp.ClientError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start") from None
                await asyncio.sleep(0.1)

    async def census(self, full: bool = True) -> dict[str, Any]:
        """See tests/load_server.py; ``full=False`` never stalls the server."""
        path = "/test/census" + ("" if full else "?quick=1")
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + path, timeout=aiohttp.ClientTimeout(10)) as resp,
        ):
            return await resp.json()

    async def settled(
        self, baseline: dict[str, Any], keys: tuple[str, ...] = LEAK_KEYS, timeout=20.0
    ) -> dict[str, Any]:
        """The full census once ``keys`` equal ``baseline`` (teardown is
        asynchronous), or the last one at the deadline: compare with ``changed``."""
        deadline = time.monotonic() + timeout
        while True:
            now = await self.census()
            if not changed(baseline, now, keys) or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.5)

    async def until(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        """The first quick census satisfying ``predicate``; AssertionError at
        the deadline."""
        deadline = time.monotonic() + timeout
        while not predicate(now := await self.census(full=False)):
            if time.monotonic() > deadline:
                raise AssertionError(f"census never satisfied the condition: {now}")
            await asyncio.sleep(0.1)
        return now


def assert_no_leaked_peer_connections(
    before: dict[str, Any], after: dict[str, Any], at_least: int = 1
) -> None:
    """Full censuses: the same number of peer connections (else name the
    object types that grew by ``at_least``)."""
    grown = {
        name: count - before["objects"].get(name, 0)
        for name, count in after["objects"].items()
        if count - before["objects"].get(name, 0) >= at_least
    }
    assert after["peer_connections"] == before["peer_connections"], (
        f"peer connections {before['peer_connections']} -> "
        f"{after['peer_connections']}; objects grown: {grown}"
    )


def changed(
    before: dict[str, Any], after: dict[str, Any], keys: tuple[str, ...] = LEAK_KEYS
) -> dict[str, tuple[Any, Any]]:
    """Entries that differ, with the task names that appeared or went away."""
    diff = {k: (before[k], after[k]) for k in keys if before[k] != after[k]}
    if "tasks" in diff:
        names = set(before["task_names"]) | set(after["task_names"])
        diff["task_names"] = {
            n: (before["task_names"].get(n, 0), after["task_names"].get(n, 0))
            for n in names
            if before["task_names"].get(n) != after["task_names"].get(n)
        }
    return diff


class Call:
    """Participants in load-tool worker processes (``Spec.process`` picks which)
    whose audio is measured over a window: loss and the longest gap per
    subscription, from packet stamps and arrival times."""

    def __init__(self, run: Run, http: aiohttp.ClientSession) -> None:
        self.run = run
        self.http = http
        self.processes = list(run.workers)

    @classmethod
    async def start(
        cls, server: ServerProcess, people: list[tuple[str, str, int]], **options: Any
    ) -> Call:
        """``people``: (user, channel, process); everyone publishes audio."""
        options = {"warmup": 0.0, "join_timeout": 10.0, **options}
        specs = [
            Spec(user, channel, token(user), True, False, process)
            for user, channel, process in people
        ]
        processes = 1 + max(s.process for s in specs)
        http = aiohttp.ClientSession()
        workers = await asyncio.gather(
            *(WorkerProcess.start() for _ in range(processes))
        )
        run = Run(
            LoadOptions(server.url, SECRET, processes=processes, **options),
            specs,
            list(workers),
            Server(http, server.url, "", None),
            lambda line: None,
        )
        call = cls(run, http)
        try:
            await run.join()
            assert all(not j.error for j in run.joins), run.joins
            await run.wait_ready()
        except BaseException:
            await call.close()
            raise
        return call

    def peer(self, user: str) -> str:
        return self.run.peer_ids()[user]

    def kill(self, process: int) -> None:
        """SIGKILL one worker process: its participants vanish without goodbye."""
        worker = self.processes[process]
        worker.kill()
        self.run.workers.remove(worker)

    async def measure(self, users: set[str] | None = None) -> list[Subscription]:
        """End the window; the audio subscriptions among ``users`` (default all)."""
        subscriptions, _ = await self.run.close_window()
        return [
            s
            for s in subscriptions
            if s.source == "microphone"
            and (users is None or {s.listener, s.publisher} <= users)
        ]

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.processes))  # killed too
        await self.http.close()


def assert_continuous(
    subscriptions: list[Subscription], max_gap_ms: float = 200.0
) -> None:
    """Every subscription arrived, lost (almost) nothing and never went silent
    for longer than ``max_gap_ms``."""
    assert subscriptions
    for s in subscriptions:
        assert s.arrived and s.expected > 0, s
        assert s.max_gap_ms is not None and s.max_gap_ms < max_gap_ms, s
        assert s.loss < 1.0, s
