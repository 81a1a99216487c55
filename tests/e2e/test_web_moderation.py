"""Moderation as the web client's user sees it (contract 1.1): a server mute
is shown and the page cannot undo it; a kick is final (4003, no reconnect)."""

from __future__ import annotations

import asyncio

import pytest

from tests.diag_call import fetch

pytestmark = pytest.mark.browser

VOICE = "window.miscord.voiceService"


async def test_a_server_mute_and_a_kick_are_shown_to_the_user(server, open_page):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, _ = await asyncio.gather(
        alice.join("alice", "moderated"), bob.join("bob", "moderated")
    )
    await bob.wait_hearing(a_id)
    base = f"/api/channels/moderated/participants/{a_id}"
    status, _ = await fetch(
        server,
        base + "/mute",
        "admin",
        method="POST",
        json={"source": "microphone", "muted": True},
    )
    assert status == 200
    await alice.wait_for(f"() => {VOICE}.serverMuted === true")
    await alice.wait_for(
        "() => document.querySelector('#alert-text').textContent"
        ".includes('moderator muted')"
    )
    await bob.wait_row(a_id, "muted", "true")

    status, _ = await fetch(server, base + "/kick", "admin", method="POST")
    assert status == 200
    await alice.wait_for(f"() => {VOICE}.state === 'closed'")
    assert await alice.js(f"{VOICE}.closeReason") == "kicked"
    assert "removed you" in await alice.js(
        "document.querySelector('#alert-text').textContent"
    )
    await bob.wait_row(a_id, "muted", None)  # her row is gone
    await asyncio.sleep(1.5)  # three first-backoff periods: she stays out
    assert (
        await alice.js("window.miscord.websocketService.get('voice').reconnects") == 0
    )
    assert a_id not in server.services.sfu.participants
