"""``miscord-sfu loadtest``: it measures, judges, and never hangs on a broken server."""

import asyncio
import json
import signal
import sys
import time

from aiohttp import web

from benchmarks.common import SECRET, ServerProcess, free_port
from miscord_client.load.coordinator import run
from miscord_client.load.scenario import LoadOptions


async def loadtest_cli(url: str, *args: str, timeout: float = 90) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "signaling.cli", "loadtest", url, "--secret", SECRET, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def test_a_run_reports_everything_and_passes_its_bounds(tmp_path):
    server = await ServerProcess.start()
    try:
        code, out = await loadtest_cli(
            server.url,
            *("--channels", "2", "--per-channel", "3", "--publishers", "2"),
            *("--screens", "1", "--duration", "3", "--warmup", "0.5"),
            *("--max-p99-ms", "100"),  # the machine may be busy: judge the tool
            *("--json", str(tmp_path / "result.json")),
        )
        health = await server.get("/healthz")
    finally:
        server.stop()
    assert code == 0, out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] and result["joined"] == result["participants"] == 6
    # 2 channels x 2 publishers x 2 listeners each, 50 packets/s for 3 s
    assert 8 * 148 <= result["expected"] <= 8 * 152
    assert result["loss_percent"] <= 0.5
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= 100
    assert result["join_ms"]["p99"] > 0 and result["worst_gap_ms"] < 200
    assert result["server"]["cpu_percent"] > 0 and result["server"]["rss_mib"] > 10
    assert result["server"]["forwarded_per_s"] > 0
    assert result["clients_cpu_percent"] > 0
    assert out.count("t=") >= 3  # a progress line every second
    for row in ("join p50 / p99 ms", "audio loss %", "latency p50 / p99", "screen"):
        assert row in out
    assert out.rstrip().endswith("PASS")
    assert health["participants"] == 0  # everyone left


async def test_a_bound_crossed_fails_the_run():
    server = await ServerProcess.start()
    try:
        options = LoadOptions(
            server.url, SECRET, per_channel=2, duration=1, warmup=0, max_p99_ms=0.001
        )
        result = await run(options)
    finally:
        server.stop()
    assert not result.ok
    assert result.failures == [f"latency p99 {result.latency(0.99):.1f} ms > 0.001 ms"]
    assert "FAIL: latency p99" in result.summary()


async def test_a_server_that_never_answers_join_fails_the_run_in_time():
    async def healthz(request):
        return web.json_response({"status": "ok"})

    async def silent_ws(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:  # reads, never answers
            pass
        return ws

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", silent_ws)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        started = time.monotonic()
        code, out = await loadtest_cli(
            f"http://127.0.0.1:{port}", "--join-timeout", "2", timeout=30
        )
    finally:
        await runner.cleanup()
    assert code == 2
    assert "no participant could join: TimeoutError" in out
    assert time.monotonic() - started < 20


async def test_a_server_that_dies_mid_run_fails_the_run_in_time():
    server = await ServerProcess.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "signaling.cli", "loadtest", server.url, "--secret", SECRET),
        *("--duration", "4", "--warmup", "0"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        while b"t=" not in await asyncio.wait_for(proc.stdout.readline(), 60):
            pass
        server.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await proc.wait() == 1
        assert time.monotonic() - killed_at < 15
    finally:
        if proc.returncode is None:
            proc.kill()
        server.stop()
    assert "FAIL" in out and "loss" in out
