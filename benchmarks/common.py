"""Shared pieces of the benchmarks: a server process, worker processes, reports.

Every benchmark runs the server as its own process (so its CPU and memory can be
read alone) and its synthetic clients in other processes, all on 127.0.0.1.
Run them through ``scripts/bench`` (a loopback-only network namespace).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiortc
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"
SECRET = "benchmark-secret-of-sufficient-length-32"
#: every synthetic client connects from 127.0.0.1: lift the per-address caps
LOOPBACK_CROWD = (
    "--max-sockets-per-address",
    "100000",
    "--max-unjoined-sockets",
    "100000",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        if found := re.search(r"model name\s*:\s*(.+)", text):
            cpu = found.group(1).strip()
    except OSError:
        pass
    return (
        f"{cpu}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
        f"{platform.python_version()}, aiortc {aiortc.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str

    @classmethod
    async def start(cls, *args: str, root: Path = ROOT) -> ServerProcess:
        """``serve`` from the checkout at ``root`` (another revision's, for a
        side-by-side run: ``checkout``)."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "signaling.cli",
                "serve",
                "--port",
                str(port),
                "--secret",
                SECRET,
                "--log-level",
                "warning",
                *args,
            ],
            env=env,
            cwd=root,  # ``-m`` imports from here first
        )
        server = cls(proc, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(server.url + "/healthz") as resp:
                        if resp.status == 200:
                            return server
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                await asyncio.sleep(0.1)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process so far."""
        times = self.ps.cpu_times()
        return times.user, times.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    async def get(self, path: str) -> Any:
        """The JSON of a support GET."""
        return json.loads(await self.text(path))

    async def text(self, path: str) -> str:
        """The body of a support GET."""
        from signaling import auth

        token = auth.issue(SECRET, "bench-support", ["*"], role="support")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.url + path, headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            return await resp.text()

    def stop(self) -> None:
        """SIGTERM; a second one if calls hold the drain open (it ends the
        drain at once), then SIGKILL."""
        for signal_, wait in ((self.proc.terminate, 1), (self.proc.terminate, 10)):
            signal_()
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                pass
        self.proc.kill()
        self.proc.wait()


class Worker:
    """A client process speaking JSON lines over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, module: str, *args: str) -> Worker:
        """Run ``python -m module --worker args...`` (``module``: the caller's
        ``__spec__.name``, e.g. ``benchmarks.voice_room``)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--worker",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=2**26,  # a report line carries every latency sample
        )
        return cls(proc)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

    async def recv(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("worker exited")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


def emit(message: dict[str, Any]) -> None:
    """A worker's reply to the benchmark process (one JSON line on stdout)."""
    print(json.dumps(message), flush=True)


async def serve_counts(counters: list[Any], source: str | None = None) -> None:
    """A worker's measurement protocol over stdin: ``start`` forgets what was
    counted so far, ``stop`` replies with every stream's counts (of ``source``
    only, if given) and latencies, then returns."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        command = json.loads(line)["cmd"]
        if command == "start":
            for counter in counters:
                counter.reset()
            emit({"started": True})
        elif command == "stop":
            streams, latencies = [], []
            for counter in counters:
                for (_, kind), s in counter.streams.items():
                    if source is None or kind == source:
                        streams.append(
                            {
                                "packets": s.packets,
                                "expected": s.expected,
                                "lost": s.lost,
                                "bytes": s.bytes,
                            }
                        )
                        latencies.extend(s.latencies)
            emit({"streams": streams, "latencies": latencies})
            return


def checkout(revision: str) -> Path:
    """A checkout of ``revision`` beside this one (build/against/REV, a git
    worktree) with its C module built in place, for a server of that revision
    to run side by side with this one's."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = ROOT / "build" / "against" / sha
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), sha],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    # the revision's own setup.py names its C module and where it goes
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=path,
        check=True,
    )
    return path


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def publish(args: Any, name: str, body: str) -> None:
    """Print a benchmark's section, and write it unless ``--no-write``."""
    if args.write:
        write_section(name, body)
    print(body)


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
