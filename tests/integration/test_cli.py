"""The console command on a machine with no configuration."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp

from tests.wsclient import Ws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    env.update(extra)
    return env


async def wait_healthy(url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as resp:
                    return await resp.json()
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """``miscord-sfu ARGS`` run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "signaling.cli", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
    )


def serve(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "signaling.cli", "serve", "--port", str(port), *args],
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> tuple[float, str]:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return time.monotonic() - start, out


async def test_serve_with_no_config_serves_health_page_and_dev_login():
    proc, url = serve()
    try:
        health = await wait_healthy(url)
        assert health["status"] == "ok"
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as resp:
                assert resp.status == 200 and "<html" in (await resp.text()).lower()
            async with http.get(url + "/api/config") as resp:
                assert (await resp.json()) == {"dev_login": True}
            async with http.post(
                url + "/api/dev-login", json={"user": "alice"}
            ) as resp:
                token = (await resp.json())["token"]
        ws = await Ws.open(url)
        assert (await ws.join(token))["peer_id"]
        await ws.close()
    finally:
        seconds, out = stop(proc)
    assert proc.returncode == 0 and seconds < 5
    assert "development login enabled" in out
    assert token not in out


async def test_token_command_prints_a_token_the_server_accepts():
    secret = "a-secret-of-at-least-thirty-two-bytes!!"
    issued = cli("token", "--user", "bob", "--channel", "general", "--secret", secret)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    issued = cli(
        "token",
        *("--user", "bob", "--channel", "*", "--role", "support"),
        env=clean_env(SFU_SECRET=secret),
    )
    assert issued.returncode == 0, issued.stderr
    from_env = issued.stdout.strip()
    missing = cli("token", "--user", "bob")
    assert missing.returncode == 2 and "SFU_SECRET" in missing.stderr
    # every channel only when asked for by name: no default of "*"
    unbounded = cli("token", "--user", "bob", env=clean_env(SFU_SECRET=secret))
    assert unbounded.returncode == 2 and "--channel '*'" in unbounded.stderr
    proc, url = serve(env=clean_env(SFU_SECRET=secret, SFU_LOG_FORMAT="json"))
    try:
        await wait_healthy(url)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/api/config") as resp:
                assert (await resp.json()) == {"dev_login": False}
            async with http.post(url + "/api/dev-login", json={"user": "x"}) as resp:
                assert resp.status == 404
            async with http.get(
                url + "/api/debug/websocket-stats",
                headers={"Authorization": f"Bearer {from_env}"},
            ) as resp:
                assert resp.status == 200
        ws = await Ws.open(url)
        joined = await ws.join(token, channel="general")
        assert joined["channel"] == "general"
        other = await Ws.open(url)
        await other.send(
            {"type": "join", "token": token, "channel": "random", "kind": "voice"}
        )
        assert (await other.expect("error"))["code"] == "forbidden"
        await ws.close()
        await other.close()
    finally:
        _, out = stop(proc)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all(
        {"ts", "level", "category", "emoji", "msg"} <= set(line) for line in lines
    )
    assert secret not in out and token not in out


async def test_systemd_hears_ready_once_it_listens_and_stopping_at_sigterm(tmp_path):
    """``Type=notify``: READY=1 when /healthz answers, STOPPING=1 at SIGTERM
    (before the drain ends), exit status 0."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.settimeout(20)
        proc, url = serve(env=clean_env(NOTIFY_SOCKET=path))
        try:
            ready = await asyncio.to_thread(systemd.recv, 100)
            assert ready == b"READY=1"
            await wait_healthy(url, timeout=1)  # it listens already
            proc.send_signal(signal.SIGTERM)
            stopping = await asyncio.to_thread(systemd.recv, 100)
            assert stopping == b"STOPPING=1"
            assert await asyncio.to_thread(proc.wait, 10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


async def test_serve_takes_the_sample_config_and_refuses_a_bad_key(tmp_path):
    printed = cli("config-sample")
    assert printed.returncode == 0, printed.stderr
    sample = printed.stdout
    good = tmp_path / "good.toml"
    good.write_text(sample)
    proc, url = serve("--config", str(good))
    try:
        assert (await wait_healthy(url))["status"] == "ok"
    finally:
        stop(proc)
    bad = tmp_path / "bad.toml"
    assert "\nresume_grace = 15.0\n" in sample
    bad.write_text(sample.replace("resume_grace = 15.0", "resume_grace = -1"))
    proc, _ = serve(env=clean_env(SFU_CONFIG=str(bad)))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "resume_grace (--resume-grace" in out, out
    bad.write_text("heartbeat_intervall = 5\n")
    proc, _ = serve("--config", str(bad))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "unknown key 'heartbeat_intervall'" in out, out
