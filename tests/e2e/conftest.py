"""Fixtures for end-to-end tests of the web client in headless Chromium.

One browser process per participant: ``--use-file-for-fake-audio-capture`` is a
process-wide flag, so each participant gets its own tone as its microphone.
Every wait has a deadline; nothing sleeps a fixed time to let things happen.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import Server
from tests.e2e.webpage import DEFAULT_TIMEOUT, CallPage

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
RATE = 48000
#: what a user behind a TURN-only firewall has: every RTCPeerConnection the
#: page makes gathers relay candidates only, whatever the page asks
FORCE_RELAY = """(() => {
  const Native = window.RTCPeerConnection;
  function RelayOnly(config = {}, ...rest) {
    return new Native({ ...config, iceTransportPolicy: "relay" }, ...rest);
  }
  RelayOnly.prototype = Native.prototype;
  Object.setPrototypeOf(RelayOnly, Native);
  window.RTCPeerConnection = RelayOnly;
})();"""

pytestmark = pytest.mark.browser


def write_tone(path: Path, freq: float, seconds: float = 2.0, amplitude: float = 0.3):
    """A mono 16-bit WAV of a sine; a whole number of periods, so it loops cleanly."""
    t = np.arange(int(RATE * seconds)) / RATE
    samples = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture
async def playwright() -> AsyncIterator[Any]:
    async with async_playwright() as p:
        yield p


@pytest.fixture
async def launch(
    playwright: Any, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Browser]]]:
    """Start one Chromium whose microphone plays a tone of ``freq`` Hz."""
    browsers: list[Browser] = []

    async def start(freq: float) -> Browser:
        wav = write_tone(tmp_path / f"tone-{freq:g}.wav", freq)
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
            timeout=15000,
        )
        browsers.append(browser)
        return browser

    yield start
    await asyncio.gather(*(b.close() for b in browsers), return_exceptions=True)


@pytest.fixture
async def open_page(
    server: Server, launch: Callable[..., Awaitable[Browser]]
) -> Callable[..., Awaitable[CallPage]]:
    """A page of the web client in a fresh browser (or a given one), on the
    ``server`` fixture (or the given one); ``relay``: its peer connections
    use TURN only."""

    async def open_(
        label: str,
        freq: float = 500,
        browser: Browser | None = None,
        on: Server | None = None,
        relay: bool = False,
    ) -> CallPage:
        if browser is None:
            browser = await launch(freq)
        page = await browser.new_page(viewport={"width": 1280, "height": 720})
        if relay:
            await page.add_init_script(FORCE_RELAY)
        page.set_default_timeout(DEFAULT_TIMEOUT * 1000)
        return await CallPage(page, on or server, label).goto()

    return open_
