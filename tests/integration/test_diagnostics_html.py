"""The HTML report in headless Chromium: its charts draw data points."""

import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.diag_call import connected, diag_server, has, participant, wait_report
from tests.faults import OutgoingFault

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report.png"
#: set to 1 to refresh docs/report.png (otherwise it goes to tmp_path, so that a
#: test run leaves the checkout clean)
UPDATE_SCREENSHOT = "MISCORD_UPDATE_SCREENSHOT"

CHART_POINTS = """() => Object.fromEntries([...document.querySelectorAll("svg.chart")]
  .map((svg) => [svg.dataset.chart, [...svg.querySelectorAll("polyline.series")]
    .reduce((n, line) => n + line.points.numberOfItems, 0)]))"""


async def test_html_report_shows_charts_with_data(start_server, clients, tmp_path):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    OutgoingFault(a.publish_pc, drop=0.1)
    await wait_report(
        server,
        a.peer_id,
        lambda r: has("uplink_loss", "uplink")(r) and len(r["series"]["t"]) >= 12,
    )
    url = f"{server.url}/api/peers/{a.peer_id}/report?format=html"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1180, "height": 900})
            await page.set_extra_http_headers(
                {"Authorization": f"Bearer {server.token('alice')}"}
            )
            response = await page.goto(url, timeout=10_000)
            assert response is not None and response.status == 200
            points = await page.evaluate(CHART_POINTS)
            assert set(points) == {
                "loss",
                "jitter",
                "delay",
                "late",
                "rtt",
                "level",
                "bitrate",
            }
            assert all(n >= 8 for n in points.values()), points
            verdict = await page.inner_text(".verdict b")
            assert verdict.lower() == "degraded"
            assert "uplink_loss" in await page.inner_text(".finding")
            assert await page.locator("tbody tr").count() > 10
            shot = (
                SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT) else tmp_path / "r.png"
            )
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            await browser.close()
