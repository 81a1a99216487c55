"""Screen share between two browsers, stop and share again; the README screenshot."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot-call.png"
#: set to 1 to refresh docs/screenshot-call.png (otherwise it goes to tmp_path,
#: so that a test run leaves the checkout clean)
UPDATE_SCREENSHOT = "MISCORD_UPDATE_SCREENSHOT"

PLAYING = """([peer]) => {
  const video = document.querySelector(
    `#screens .screen-tile[data-peer-id="${peer}"] video`);
  if (!video || video.videoWidth === 0) return false;
  const frames = video.getVideoPlaybackQuality().totalVideoFrames;
  const seen = (window.__frames ??= {})[peer];
  window.__frames[peer] = frames;
  // frames advance: more than a few new ones since the first look
  if (seen === undefined) { window.__first = frames; return false; }
  return frames >= window.__first + 5 ?
    {width: video.videoWidth, height: video.videoHeight, frames} : false;
}"""

NO_TILE = """([peer]) => !document.querySelector(
  `#screens .screen-tile[data-peer-id="${peer}"]`)"""


async def test_screen_share_reaches_the_other_browser(open_page, tmp_path):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "screens"), bob.join("bob", "screens")
    )

    # share: the headless fake getDisplayMedia gives a moving 1280x720 pattern
    await alice.page.click("#share-button")
    await alice.wait_for("() => window.miscord.voiceService.sharing")
    await alice.wait_for(
        "() => document.querySelector('#screens .screen-tile[data-local=true] video')"
    )
    size = await bob.wait_for(PLAYING, [a_id])
    assert size["width"] > 0 and size["height"] > 0
    await bob.wait_for(
        f"() => document.querySelector('#participant-list [data-peer-id=\"{a_id}\"]')"
        ".dataset.sharing === 'true'"
    )
    codec = await alice.js(
        """async () => {
          const stats = await window.miscord.voiceService.publishPc.getStats();
          let mime = null;
          stats.forEach((s) => {
            if (s.type === 'outbound-rtp' && s.kind === 'video' && s.codecId)
              mime = stats.get(s.codecId).mimeType;
          });
          return mime;
        }"""
    )
    assert codec == "video/VP8"

    # the screenshot for the README: bob watches alice's screen, both speaking
    await bob.wait_for(
        "() => [...document.querySelectorAll('#participant-list .participant')]"
        ".every((li) => li.dataset.speaking === 'true')"
    )
    update = os.environ.get(UPDATE_SCREENSHOT) == "1" or not SCREENSHOT.exists()
    shot = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    shot.parent.mkdir(exist_ok=True)
    await bob.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # stop: bob's tile and video element go; alice's m-line stays for reuse
    await alice.page.click("#share-button")
    await alice.wait_for("() => !window.miscord.voiceService.sharing")
    await bob.wait_for(NO_TILE, [a_id])
    await bob.wait_for(
        "([peer]) => !window.miscord.voiceService.remoteOf(peer, 'screen')"
        " && document.querySelectorAll('video').length === 0",
        [a_id],
    )
    await alice.wait_for("() => document.querySelectorAll('video').length === 0")
    transceivers = await alice.js(
        "window.miscord.voiceService.publishPc.getTransceivers()"
        ".map((t) => [t.mid, t.direction])"
    )
    assert transceivers == [["0", "sendonly"], ["1", "inactive"]]

    # share again: the same transceiver, and bob plays it again
    await alice.js("delete window.__frames")
    await bob.js("delete window.__frames")
    await alice.page.click("#share-button")
    await bob.wait_for(PLAYING, [a_id])
    transceivers = await alice.js(
        "window.miscord.voiceService.publishPc.getTransceivers()"
        ".map((t) => [t.mid, t.direction])"
    )
    assert transceivers == [["0", "sendonly"], ["1", "sendonly"]]
    for page in (alice, bob):
        info = await page.debug()
        assert info["voice"]["errors"] == [], page.dump()
        assert page.errors == []
    assert b_id


async def test_a_refused_share_rolls_back(start_server, open_page):
    server = await start_server(max_screens=1)
    alice, bob = await asyncio.gather(
        open_page("alice", 500, on=server), open_page("bob", 700, on=server)
    )
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "one-screen"), bob.join("bob", "one-screen")
    )
    await alice.page.click("#share-button")
    await bob.wait_for(PLAYING, [a_id])

    # a second screen is over the channel's limit: the server refuses the offer
    await bob.page.click("#share-button")
    await bob.page.wait_for_selector("#alert[data-code=channel_full]", state="visible")
    refused = await bob.js(
        """() => {
          const v = window.miscord.voiceService;
          return {
            sharing: v.sharing,
            state: v.state,
            signaling: v.publishPc.signalingState,
            screen: v.screenTransceiver.direction,
            videos: document.querySelectorAll('video').length,
          };
        }"""
    )
    # bob still sees alice's screen, and his own share is undone
    assert refused == {
        "sharing": False,
        "state": "connected",
        "signaling": "stable",
        "screen": "inactive",
        "videos": 1,
    }

    # once alice stops, bob may share; alice plays it
    await alice.page.click("#share-button")
    await bob.wait_for(NO_TILE, [a_id])
    await bob.page.click("#share-button")
    await alice.wait_for(PLAYING, [b_id])
    await bob.wait_for("() => window.miscord.voiceService.state === 'connected'")
    assert alice.errors == bob.errors == []
