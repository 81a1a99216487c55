"""Mute, diagnosis, leave, replacement by a second tab, reconnect after a drop."""

from __future__ import annotations

import asyncio
import time

import pytest

from signaling.connections import TIMEOUT
from signaling.protocol import Close

pytestmark = pytest.mark.browser


async def test_mute_diagnose_and_leave(open_page):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "talk"), bob.join("bob", "talk")
    )
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))

    # a healthy call: no findings
    healthy = await alice.diagnose()
    assert healthy["findings"] == [], healthy
    assert healthy["checks"]["publishConnection"] == "connected"
    # the server's own report was read (its findings are merged into the result)
    assert healthy["checks"]["serverReport"] == 200
    assert healthy["server"]["peer_id"] == a_id

    # bob sees alice speak (the server's speaking messages), unmuted
    await bob.wait_row(a_id, "speaking", "true")
    await bob.wait_row(a_id, "muted", "false")

    # mute: bob's page shows it, alice's track is disabled, diagnosis says so
    await alice.page.click("#mute-button")
    await bob.wait_row(a_id, "muted", "true")
    await bob.wait_row(a_id, "speaking", "false")
    assert await alice.js("window.miscord.voiceService.micTrack.enabled") is False
    muted = await alice.diagnose()
    assert [f["code"] for f in muted["findings"]] == ["muted"], muted
    assert muted["findings"][0]["severity"] == "info"  # deliberate: no fault

    # unmute
    await alice.page.click("#mute-button")
    await bob.wait_row(a_id, "muted", "false")
    assert await alice.js("window.miscord.voiceService.micTrack.enabled") is True

    # deafen silences every incoming audio element, on alice's page only
    await alice.page.click("#deafen-button")
    playing = "[...document.querySelectorAll('audio')].map((a) => a.muted)"
    assert await alice.js(playing) == [True]
    assert [f["code"] for f in (await alice.diagnose())["findings"]] == ["deafened"]
    await alice.page.click("#deafen-button")
    assert await alice.js(playing) == [False]

    # another microphone: a new track on the same sender, no renegotiation
    before = await alice.js(
        "({track: window.miscord.voiceService.micTrack.id,"
        " device: window.miscord.voiceService.micTrack.getSettings().deviceId})"
    )
    options = await alice.page.eval_on_selector_all(
        "#mic-select option", "(options) => options.map((o) => o.value)"
    )
    other = next(o for o in options if o and o != before["device"])
    await alice.page.select_option("#mic-select", other)
    await alice.wait_for(
        """([old]) => {
          const v = window.miscord.voiceService;
          return v.micTrack.id !== old && v.micTransceiver.sender.track === v.micTrack;
        }""",
        [before["track"]],
    )
    assert (
        await alice.js("window.miscord.voiceService.micTrack.getSettings().deviceId")
        == other
    )
    await bob.wait_hearing(a_id)

    # audio data logging: levels and counters in the console once a second
    logging = await alice.js("window.miscord.enableAudioDataLogging(true)")
    assert logging["enabled"] is True
    assert logging["server"] == 200  # the server logs her audio data too
    deadline = time.monotonic() + 5
    while not any("📊" in line and "→ mic level=" in line for line in alice.console):
        assert time.monotonic() < deadline, alice.dump()
        await asyncio.sleep(0.1)
    assert any("← bob level=" in line for line in alice.console)
    await alice.js("window.miscord.enableAudioDataLogging(false)")

    # leave: everything alice made is gone; bob drops her tile and audio element
    await alice.js(
        """() => {
          const v = window.miscord.voiceService;
          window.__kept = {pcs: [v.publishPc, v.subscribePc], mic: v.micTrack};
        }"""
    )
    await alice.page.click("#leave-button")
    await alice.wait_for("() => window.miscord.voiceService.state === 'left'")
    left = await alice.js(
        """() => ({
          pcs: window.__kept.pcs.map((pc) => pc.connectionState),
          mic: window.__kept.mic.readyState,
          elements: document.querySelectorAll('audio, video').length,
          remote: window.miscord.voiceService.remote.size,
          publishPc: window.miscord.voiceService.publishPc,
          ws: window.miscord.websocketService.get('voice').state,
          signinShown: !document.getElementById('signin').hidden,
        })"""
    )
    assert left == {
        "pcs": ["closed", "closed"],
        "mic": "ended",
        "elements": 0,
        "remote": 0,
        "publishPc": None,
        "ws": "closed",
        "signinShown": True,
    }
    await bob.wait_row(a_id, "muted", None)
    await bob.wait_for(
        f"() => !document.querySelector('audio[data-peer-id=\"{a_id}\"]')"
        " && window.miscord.voiceService.remote.size === 0"
    )
    assert alice.errors == bob.errors == []


async def test_second_tab_replaces_the_first(server, open_page):
    first = await open_page("bob#1", 700)
    await first.join("bob", "tabs")
    second = await open_page("bob#2", browser=first.page.context.browser)
    new_id = await second.join("bob", "tabs")

    await first.wait_for("() => window.miscord.voiceService.state === 'closed'")
    await first.page.wait_for_selector("#alert[data-code=replaced]", state="visible")
    assert "another tab" in await first.page.inner_text("#alert-text")
    state = await first.js(
        """() => ({
          why: window.miscord.voiceService.closeReason,
          ws: window.miscord.websocketService.get('voice').getDebugInfo(),
          elements: document.querySelectorAll('audio, video').length,
        })"""
    )
    assert state["why"] == "replaced"
    assert state["ws"]["state"] == "closed"
    assert state["ws"]["lastClose"]["code"] == Close.REPLACED
    assert state["ws"]["reconnectIn"] is None
    assert state["elements"] == 0

    # it stays gone: the server keeps exactly the second tab's connection
    deadline = time.monotonic() + 1.5  # three first-backoff periods
    manager = server.services.manager
    while time.monotonic() < deadline:
        assert manager.current("bob", "voice").peer_id == new_id
        assert (
            await first.js("window.miscord.websocketService.get('voice').reconnects")
            == 0
        )
        await asyncio.sleep(0.1)
    assert await second.js("window.miscord.voiceService.state") == "connected"


async def test_reconnects_after_an_unexpected_drop(server, open_page):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "drops"), bob.join("bob", "drops")
    )
    # the server ends bob for good (as a media timeout does): its resume is
    # refused (4410) and it joins afresh, as a new peer
    manager = server.services.manager
    await manager.end(manager.by_peer[b_id], TIMEOUT, Close.TIMEOUT, "test drop")

    await bob.wait_for(
        "() => window.miscord.websocketService.get('voice').reconnects >= 1"
    )
    await bob.wait_for(
        "([old]) => window.miscord.voiceService.state === 'connected'"
        " && window.miscord.voiceService.peerId !== old",
        [b_id],
    )
    new_b = await bob.js("window.miscord.voiceService.peerId")
    await asyncio.gather(alice.wait_hearing(new_b), bob.wait_hearing(a_id))
    info = await bob.debug()
    assert info["websocket"]["voice"]["lastClose"]["code"] == Close.RESUME_REFUSED
    assert manager.counters["resume_refused"] == 1
    assert info["voice"]["participants"] and len(info["voice"]["participants"]) == 2


async def test_dev_login_and_a_bad_token(start_server, open_page):
    server = await start_server(secret="")
    assert server.settings.dev_login
    dora = await open_page("dora", on=server)
    page = dora.page
    assert await page.is_visible("#name-input")
    assert not await page.is_visible("#token-input")
    await page.fill("#name-input", "dora")
    await page.fill("#channel-input", "dev")
    await page.click("#join-button")
    await dora.wait_for("() => window.miscord.voiceService.state === 'connected'")
    assert await page.inner_text("#participant-list .name") == "dora (you)"
    await page.click("#leave-button")
    await dora.wait_for("() => window.miscord.voiceService.state === 'left'")

    # a token the server refuses: 4401, an error shown, no reconnect
    await page.click("#use-token")
    await page.fill("#token-input", "eyJhbGciOiJIUzI1NiJ9.e30.not-a-valid-signature")
    await page.click("#join-button")
    await page.wait_for_selector("#alert[data-code=unauthorized]", state="visible")
    ws = await dora.js("window.miscord.websocketService.get('voice').getDebugInfo()")
    assert ws["state"] == "closed"
    assert ws["lastClose"]["code"] == Close.UNAUTHORIZED
    assert ws["reconnectIn"] is None
    assert await page.is_visible("#signin-form")
    assert "unauthorized" in await page.inner_text("#signin-error")
    assert dora.errors == []


async def test_a_forbidden_channel_is_final(server, open_page):
    eve = await open_page("eve")
    await eve.page.fill("#token-input", server.token("eve", channels=["elsewhere"]))
    await eve.page.fill("#channel-input", "secret")
    await eve.page.click("#join-button")
    await eve.page.wait_for_selector("#alert", state="visible")
    assert "forbidden" in await eve.page.inner_text("#alert-text")
    ws = await eve.js("window.miscord.websocketService.get('voice').getDebugInfo()")
    assert ws["state"] == "closed"
    assert ws["reconnectIn"] is None
    assert [e["code"] for e in ws["errors"]] == ["forbidden"]
    assert await eve.js("window.miscord.voiceService.state") == "closed"
    assert await eve.js("document.querySelectorAll('audio, video').length") == 0
    assert server.services.manager.current("eve", "voice") is None
