"""Hostile input: generated messages, mutated SDP, floods and bad tokens.

The server runs in its own process (tests/load_server.py) so that what it does
with the abuse is measured apart from the abuser: a control call in another
channel (load-tool workers, another process) must never drop audio (no gap
over 200 ms between packet arrivals), no participant may leak, the server must
never answer ``internal``. Each hostile frame is followed by a ``ping`` whose
``pong`` bounds the replies that frame caused (one connection's messages are
handled in order).
"""

import asyncio
import json
import time

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks.common import LOOPBACK_CROWD, SECRET
from signaling import auth, protocol
from signaling.config import Settings
from tests.integration.test_fuzz_signaling import messages
from tests.load_sdp import mutants, real_answer, real_offer
from tests.load_support import (
    Call,
    CensusServer,
    assert_continuous,
    assert_no_leaked_peer_connections,
    changed,
    token,
)
from tests.wsclient import Ws

CONTRACT_ERRORS = set(protocol.ERROR_CODES) - {protocol.INTERNAL}
#: answers to well-formed requests that need no reply (mute, candidate, stats)
QUIET = ("offer", "answer", "candidate", "mute", "stats")
UNLIMITED = ("--rate-limit", "1000000", "--rate-burst", "1000000")
CONTROL = [("control-a", "control", 0), ("control-b", "control", 0)]


@pytest.fixture
async def abuse_server(request):
    server = await CensusServer.start(*getattr(request, "param", ()))
    try:
        yield server
        assert server.proc.poll() is None, "the server died"
    finally:
        server.stop()


async def internal_errors(server) -> int:
    """How often the server answered ``internal`` (it never should)."""
    stats = await server.get("/api/debug/websocket-stats")
    return stats["errors_by_code"].get(protocol.INTERNAL, 0)


async def exchange(ws: Ws, frame: str | bytes, n: int) -> tuple[list[dict], int | None]:
    """Send ``frame`` then a ping; the messages before its pong, and the close
    code if the server closed the socket instead."""
    if isinstance(frame, bytes):
        await ws.ws.send_bytes(frame)
    else:
        await ws.send(frame)
    if ws.ws.closed:
        return [], ws.ws.close_code
    await ws.send({"type": "ping", "id": f"barrier-{n}"})
    replies = []
    while True:
        msg = await ws.ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return replies, ws.ws.close_code
        reply = json.loads(msg.data)
        if reply.get("type") == "pong" and reply.get("ref") == f"barrier-{n}":
            return replies, None
        replies.append(reply)


def oracle(frame: str | bytes) -> str:
    """What the contract makes of a frame: an error code, or the message type."""
    if isinstance(frame, bytes):
        return protocol.BAD_MESSAGE
    try:
        return protocol.parse(frame).type
    except protocol.ProtocolError as exc:
        return exc.code


def reaches_the_session(frame: str) -> bool:
    """A frame the media session handles (not refused while parsing)."""
    small = len(frame.encode()) <= Settings.max_message_bytes
    return small and oracle(frame) not in CONTRACT_ERRORS


def generate(count: int) -> list[str | bytes]:
    """Frames from hypothesis (it cannot drive async tests: generate, then
    replay): JSON messages of every type with fields of any shape, raw text
    and binary."""
    frames: list[str | bytes] = []

    @settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.generate],
    )
    @given(
        frame=st.one_of(
            messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)
        )
    )
    def collect(frame):
        frames.append(frame)

    collect()
    return frames


async def join(server, user: str, channel: str) -> Ws:
    ws = await Ws.open(server.url)
    await ws.join(token(user), channel=channel)
    return ws


async def replay(server, frames: list[str | bytes]) -> dict[str, int]:
    """Every frame answered as the contract says; returns what happened how often."""
    ws = await join(server, "fuzzer", "fuzz")
    outcomes: dict[str, int] = {}
    try:
        for n, frame in enumerate(frames):
            expect = oracle(frame)
            replies, closed = await exchange(ws, frame, n)
            kinds = [r["type"] for r in replies]
            codes = [r.get("code") for r in replies if r["type"] == "error"]
            if expect == "leave":
                assert closed == 1000, (frame, replies, closed)
                await ws.close()
                ws = await join(server, "fuzzer", "fuzz")
            elif expect in CONTRACT_ERRORS:
                assert closed is None and codes == [expect], (frame, replies)
            elif expect == "join":
                assert closed is None and codes == ["already_joined"], (frame, replies)
            elif expect == "ping":
                assert closed is None and kinds == ["pong"], (frame, replies)
            else:
                assert expect in QUIET and closed is None, (frame, replies, closed)
                assert len(replies) <= 1 and set(kinds) <= {"error", "answer"}, replies
                assert set(codes) <= CONTRACT_ERRORS, (frame, replies)
            outcome = expect if expect in CONTRACT_ERRORS else f"{expect}:{kinds}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        await ws.close()
    return outcomes


async def check_generated_messages(server, count: int) -> None:
    frames = generate(count)
    assert len(frames) == count
    call = await Call.start(server, CONTROL)
    try:
        before = await server.census()
        await call.run.open_window()
        outcomes = await replay(server, frames)
        assert_continuous(await call.measure())
        after = await server.until(lambda c: c["participants"] == len(CONTROL))
        assert after["connections"] == after["by_peer"] == len(CONTROL)
        assert_no_leaked_peer_connections(before, await server.census())
        assert await internal_errors(server) == 0
    finally:
        await call.close()
    print(f"\n{count} generated frames: {dict(sorted(outcomes.items()))}")
    for outcome in ("bad_json", "bad_message", "unknown_type", "leave:[]"):
        assert outcomes.get(outcome), outcome  # every kind of frame was exercised


@pytest.mark.parametrize("abuse_server", [UNLIMITED], indirect=True)
async def test_1000_generated_messages_get_contract_answers(abuse_server):
    """The default suite's share (hypothesis needs ~6 ms per message here); the
    10,000 run with ``scripts/soak``."""
    await check_generated_messages(abuse_server, 1000)


@pytest.mark.soak
@pytest.mark.parametrize("abuse_server", [UNLIMITED], indirect=True)
async def test_10000_generated_messages_get_contract_answers(abuse_server):
    await check_generated_messages(abuse_server, 10_000)


async def test_an_offer_without_a_direction_gets_bad_sdp(abuse_server):
    """It once passed the checks and failed in aiortc's createAnswer: internal."""
    ws = await join(abuse_server, "mallory", "target")
    try:
        offer = (await real_offer()).replace("a=sendonly\r\n", "")
        message = {"type": "offer", "pc": "publish", "sdp": offer, "sources": {}}
        replies, closed = await exchange(ws, json.dumps(message), 0)
        assert closed is None and len(replies) == 1, replies
        assert replies[0]["code"] == "bad_sdp" and "direction" in replies[0]["message"]
    finally:
        await ws.close()


@pytest.mark.parametrize("abuse_server", [UNLIMITED], indirect=True)
async def test_1000_mutated_sdps_get_errors_or_answers(abuse_server):
    server = abuse_server
    # two publish in the target channel, so a newcomer gets offered their
    # tracks to answer (and they already have subscribe connections of their own)
    publishers = [("publisher-1", "target", 1), ("publisher-2", "target", 1)]
    call = await Call.start(server, [*CONTROL, *publishers])
    before = await server.census()
    ws = await join(server, "mallory", "target")
    try:
        offer = await ws.expect("offer", pc="subscribe")
        audio, video = await real_offer(), await real_offer(video=True)
        answer = await real_answer(offer["sdp"])
        cases = (
            [("publish", sdp, {"0": "microphone"}) for sdp in mutants(audio, 400, 1)]
            + [
                ("publish", sdp, {"0": "microphone", "1": "screen"})
                for sdp in mutants(video, 300, 2)
            ]
            + [("subscribe", sdp, None) for sdp in mutants(answer, 300, 3)]
        )
        await call.run.open_window()
        offered, accepted, codes = True, {"publish": 0, "subscribe": 0}, {}
        for n, (pc, sdp, sources) in enumerate(cases):
            if pc == "publish":
                message = {"type": "offer", "pc": pc, "sdp": sdp, "sources": sources}
            else:
                message = {"type": "answer", "pc": pc, "sdp": sdp}
                if not offered:  # a refused answer is followed by a new offer
                    await ws.expect("offer", pc="subscribe")
                    offered = True
            frame = json.dumps(message)
            replies, closed = await exchange(ws, frame, n)
            if len(frame.encode()) > Settings.max_message_bytes:
                # refused from its header, before it is read: close 1009 (the
                # unread rest makes the server's kernel reset the connection,
                # which may overtake the close frame: then 1006)
                assert closed in (1009, 1006), (n, closed)
                codes["too_large"] = codes.get("too_large", 0) + 1
                fresh = await join(server, "mallory", "target")
                await ws.close()
                ws, offered = fresh, False
                continue
            assert closed is None, (n, closed)
            if pc == "subscribe" and reaches_the_session(frame):
                offered = False  # answered: accepted, or refused and offered anew
            offered = offered or any(r["type"] == "offer" for r in replies)
            errors = [r for r in replies if r["type"] == "error"]
            answers = [r for r in replies if r["type"] == "answer"]
            if errors:
                assert len(errors) == 1 and not answers, (n, replies)
                code = errors[0]["code"]
                assert code in CONTRACT_ERRORS and errors[0]["message"], (n, replies)
                codes[code] = codes.get(code, 0) + 1
                continue
            # a mutant still valid: an answer (publish), or none (subscribe)
            assert len(answers) == (pc == "publish"), (n, replies)
            accepted[pc] += 1
            # start over on a fresh connection, which replaces this one
            fresh = await join(server, "mallory", "target")
            await ws.close()
            ws, offered = fresh, False
        print(f"\n{len(cases)} mutated SDPs: accepted {accepted}, errors {codes}")
        assert accepted["publish"] > 0  # valid mutants exist, but are rare:
        assert sum(codes.values()) > 0.9 * len(cases)
        assert_continuous(await call.measure({"control-a", "control-b"}))
        await ws.close()
        after = await server.settled(before)
        assert_no_leaked_peer_connections(before, after)
        assert not changed(before, after), changed(before, after)
        assert await internal_errors(server) == 0
    finally:
        await ws.close()
        await call.close()


async def test_a_flooding_client_is_rate_limited_then_closed_4429(abuse_server):
    server = abuse_server
    bystander = await join(server, "bystander", "flood")
    flooder = await join(server, "flooder", "flood")
    try:
        before = await server.census(full=False)
        pings = [json.dumps({"type": "ping", "id": n}) for n in range(2000)]
        for frame in pings:  # as fast as the socket takes them
            if flooder.ws.closed:
                break
            await flooder.ws.send_str(frame)
        code = await flooder.closed(timeout=10)
        assert code == 4429
        kinds = [m["type"] for m in flooder.seen]
        codes = {m.get("code") for m in flooder.seen if m["type"] == "error"}
        assert kinds.count("pong") >= 99  # the burst (100, one spent on join)
        assert codes == {"rate_limited"}
        assert kinds.count("error") > 20  # strikes before the close
        # the flooder is gone, and the others never noticed
        peer = next(m for m in flooder.seen if m["type"] == "joined")["peer_id"]
        left = await bystander.expect("participant_left", peer_id=peer)
        assert left["reason"] == "error"
        started = time.monotonic()
        assert await bystander.alive()
        assert time.monotonic() - started < 0.5
        after = await server.until(
            lambda c: c["participants"] == before["participants"] - 1
        )
        assert after["connections"] == before["connections"] - 1
        assert await internal_errors(server) == 0
    finally:
        await bystander.close()
        await flooder.close()


BAD_TOKENS = [
    "",
    "not-a-jwt",
    "a.b.c",
    "x" * 10_000,
    auth.issue(SECRET, "late", ["*"], ttl=-60),  # expired
    auth.issue("another-secret-of-thirty-two-bytes!!", "forged", ["*"]),
    # alg "none", no signature
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.",
]


@pytest.mark.parametrize("abuse_server", [LOOPBACK_CROWD], indirect=True)
async def test_1000_concurrent_bad_joins_are_refused_and_a_good_join_is_fast(
    abuse_server,
):
    server = abuse_server
    before = await server.census(full=False)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        opening = asyncio.Semaphore(50)  # within the listen backlog

        async def open_one() -> None:
            async with opening:
                sockets.append(await http.ws_connect(server.url + "/ws"))

        await asyncio.gather(*(open_one() for _ in range(1000)))
        frames = [
            json.dumps(
                {
                    "type": "join",
                    "token": BAD_TOKENS[n % len(BAD_TOKENS)],
                    "channel": "room",
                    "kind": ("voice", "events")[n % 2],
                }
            )
            for n in range(1000)
        ]

        async def good_join() -> float:
            started = time.monotonic()
            ws = await join(server, "good", "room")
            await ws.close()
            return time.monotonic() - started

        async def closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
            msg = await ws.receive(timeout=20)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            return msg.data

        good = asyncio.create_task(good_join())
        await asyncio.gather(
            *(ws.send_str(f) for ws, f in zip(sockets, frames, strict=True))
        )
        codes = await asyncio.gather(*(closed(ws) for ws in sockets))
        assert set(codes) == {4401}
        assert await good < 1.0
        stats = await server.get("/api/debug/websocket-stats")
        assert stats["counters"]["rejected_auth"] >= 1000
        after = await server.until(
            lambda c: (
                c["connections"] == before["connections"]
                and c["participants"] == before["participants"]
            )
        )
        assert after["by_user"] == before["by_user"]
        assert await internal_errors(server) == 0
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
        await http.close()
