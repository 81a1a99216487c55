"""A page of the web client in headless Chromium, driven like a user would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import ConsoleMessage, Page

from tests.conftest import Server

DEFAULT_TIMEOUT = 10.0


class CallPage:
    """One participant's page of the web client, driven like a user would."""

    def __init__(self, page: Page, server: Server, label: str) -> None:
        self.page = page
        self.server = server
        self.label = label
        self.console: list[str] = []
        self.errors: list[str] = []
        self.peer_id: str | None = None
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"[{self.label}] {message.type}: {message.text}")

    async def goto(self) -> CallPage:
        await self.page.goto(self.server.url + "/")
        await self.page.wait_for_selector("body[data-ready=true]", timeout=5000)
        return self

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def wait_for(
        self, expression: str, arg: Any = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Wait until the JS ``expression`` (a function body or arrow) is truthy."""
        try:
            handle = await self.page.wait_for_function(
                expression, arg=arg, timeout=timeout * 1000, polling=50
            )
        except Exception as exc:
            raise AssertionError(
                f"{self.label}: not true within {timeout} s: {expression}\n"
                + self.dump()
            ) from exc
        return await handle.json_value()

    def dump(self) -> str:
        return "\n".join([*self.console[-60:], f"page errors: {self.errors}"])

    async def wait_row(self, peer_id: str, attribute: str, value: str | None) -> None:
        """Until ``peer_id``'s row in the participant list has ``data-attribute``
        equal to ``value`` (None: until the row is gone)."""
        await self.wait_for(
            """([peer, name, value]) => {
              const row = document.querySelector(
                `#participant-list .participant[data-peer-id="${peer}"]`);
              return value === null ? !row : row?.dataset[name] === value;
            }""",
            [peer_id, attribute, value],
        )

    async def join(self, user: str, channel: str, processing: bool = False) -> str:
        """Sign in with a token (the test server has no dev login) and join."""
        page = self.page
        await page.fill("#token-input", self.server.token(user))
        await page.fill("#channel-input", channel)
        await page.click(".settings summary")
        await page.set_checked("#processing-toggle", processing)
        await page.click("#join-button")
        await self.wait_for("() => window.miscord.voiceService.state === 'connected'")
        self.peer_id = await self.js("window.miscord.voiceService.peerId")
        return self.peer_id

    async def stats(self) -> dict[str, Any]:
        return await self.js("window.miscord.voiceService.collectStats()")

    async def inbound(self, peer_id: str) -> dict[str, Any] | None:
        report = await self.stats()
        return next((i for i in report["inbound"] if i["peer_id"] == peer_id), None)

    async def wait_hearing(self, peer_id: str, timeout: float = DEFAULT_TIMEOUT):
        """Until packets and audio energy from ``peer_id`` rise; returns both samples."""
        deadline = time.monotonic() + timeout
        first = None
        while time.monotonic() < deadline:
            now = await self.inbound(peer_id)
            if now and now.get("packetsReceived"):
                if first is None:
                    first = now
                elif (
                    now["packetsReceived"] >= first["packetsReceived"] + 25
                    and now["totalAudioEnergy"] > first["totalAudioEnergy"]
                ):
                    return first, now
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{self.label} does not hear {peer_id}: first={first} "
            f"last={await self.inbound(peer_id)}\n{self.dump()}"
        )

    async def diagnose(self) -> dict[str, Any]:
        return await self.js("window.miscord.diagnoseAudioIssues({sampleMs: 600})")

    async def debug(self) -> dict[str, Any]:
        return await self.js("window.miscord.getDebugInfo()")
