"""Attacks on the media plane, made as an attacker makes them: a participant
whose client rewrites its own packets or sends RTCP of its own making, and
someone who watches a victim's network. Each reproduces a finding of the
review in issue 15 and checks the defence, with real aiortc peers.

The storm and flood run against the server in its own process (so that what
it does with the attack is measured apart from the attacker), beside a
control call in another channel whose audio must not gap."""

import asyncio
import time

import aiohttp
import psutil
import pytest

from miscord_client.client import VoiceClient
from tests.hostile import OwnPackets, Wire, nack_packet, send_rtcp, with_header
from tests.load_support import (
    LEAK_KEYS,
    Call,
    CensusServer,
    assert_continuous,
    assert_no_leaked_peer_connections,
    changed,
    token,
)
from tests.media import CounterScreen, ToneTrack
from tests.voice import settle, tone_participant

CONTROL = [("control-a", "control", 0), ("control-b", "control", 0)]


def media_ssrc(client: VoiceClient, publisher: str, source: str = "microphone") -> int:
    """The SSRC the server sends ``publisher``'s source to ``client`` with."""
    receiver = client.track_of(publisher, source).transceiver.receiver
    return next(iter(receiver._RTCRtpReceiver__remote_streams))


async def listening(client: VoiceClient, publisher: str, wire: Wire) -> int:
    """Wait until ``client`` receives ``publisher``'s microphone; its SSRC."""
    await client.wait_for_track(publisher)
    await settle(lambda: client.subscribe_pc.connectionState == "connected")
    if not wire.datagrams and not getattr(client, "_watched", False):
        wire.watch(client.subscribe_pc)
        client._watched = True
    ssrc = media_ssrc(client, publisher)
    start = wire.of(ssrc)
    await settle(lambda: wire.of(ssrc) > start + 25, timeout=10)
    return ssrc


class BackwardsSender:
    """Once its stream is running, sends with each packet a packet of its own
    numbered further and further below where this binding's numbering began:
    onto the indexes the m-line's previous publisher used, if a server let it."""

    def __init__(self) -> None:
        self.base: int | None = None
        self.sent = 0
        self.back = 0

    def __call__(self, data: bytes) -> list[bytes]:
        seq = int.from_bytes(data[2:4], "big")
        if self.base is None:
            self.base = seq
        self.sent += 1
        if self.sent < 10:
            return [data]
        self.back += 1
        payload = b"forged %d" % self.back
        return [data, with_header(data, seq=self.base - self.back, payload=payload)]


async def test_no_srtp_index_is_used_twice_across_publisher_swaps(server, clients):
    """Finding 1: a subscriber's m-line carries publisher after publisher; a
    passive observer of the subscriber's traffic records every (SSRC, SRTP
    index, ciphertext). The attacker numbers its packets below where its
    binding began, onto the indexes of the publisher before it. No index may
    ever carry two different ciphertexts (same keystream, two plaintexts)."""
    wire = Wire()
    victim = clients(server, "victim")
    await victim.join("swap")
    honest = await tone_participant(clients, server, "honest", 440, "swap")
    ssrcs = [await listening(victim, honest.peer_id, wire)]
    await honest.leave()
    rounds = 0
    for n in range(3):
        attacker = clients(server, f"attacker{n}")
        await attacker.join("swap")
        await attacker.publish(microphone=ToneTrack(660))
        rewriter = BackwardsSender()
        OwnPackets(attacker.publish_pc, rewriter)
        ssrcs.append(await listening(victim, attacker.peer_id, wire))
        await settle(lambda r=rewriter: r.back > 40, timeout=10)
        # a mute and an unmute re-anchor the m-line too
        await attacker.mute("microphone", True)
        await asyncio.sleep(0.3)
        await attacker.mute("microphone", False)
        await settle(lambda r=rewriter: r.back > 80, timeout=10)
        await attacker.leave()
        rounds += 1
        # the next publisher is honest: then an attacker again
        honest = await tone_participant(clients, server, f"honest{n}", 440, "swap")
        ssrcs.append(await listening(victim, honest.peer_id, wire))
        await honest.leave()
    assert len(set(ssrcs)) == 1 and rounds == 3  # one m-line all along
    assert wire.of(ssrcs[0]) > 300
    reused = wire.reused_indexes()
    some = dict(list(reused.items())[:5])
    assert not reused, f"{len(reused)} SRTP indexes carried two packets, e.g. {some}"
    downlink = next(
        s
        for p in server.services.sfu.participants.values()
        if p.peer_id == victim.peer_id
        for s in p.subscribe.downlinks
    )
    assert downlink.native.refused_index > 0  # the forged packets were refused


class Health:
    """``/healthz`` latency, sampled every 20 ms while an attack runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.monotonic()
                async with http.get(self.url + "/healthz") as resp:
                    await resp.read()
                self.samples.append(time.monotonic() - started)
                await asyncio.sleep(0.02)

    async def p99_ms(self) -> float:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        ordered = sorted(self.samples)
        assert len(ordered) > 50, len(ordered)
        return 1000 * ordered[int(0.99 * (len(ordered) - 1))]


def control_gap(subscriptions: list) -> float:
    """The control call's longest audio gap (ms), once it is continuous."""
    assert_continuous(subscriptions)
    return max(s.max_gap_ms for s in subscriptions)


def voice_client(server, user: str) -> VoiceClient:
    return VoiceClient(server.url, token(user), ice_hosts=["127.0.0.1"])


async def test_a_nack_storm_gets_each_packet_once_within_the_budget(abuse_server):
    """Finding 2: one compound NACK of 1,352 bytes (335 items, every bit set,
    over the whole history) twenty times a second. Before, each made the
    server resend about 5,600 packets. Now each packet goes out again at most
    once per RTT and resends stay within what the stream itself sends; the
    server stays responsive and the others' audio does not gap."""
    server = abuse_server
    call = await Call.start(server, CONTROL)
    speaker, attacker = voice_client(server, "speaker"), voice_client(server, "nacker")
    try:
        await speaker.join("storm")
        await speaker.publish(microphone=ToneTrack(440))
        wire = Wire()
        await attacker.join("storm")
        ssrc = await listening(attacker, speaker.peer_id, wire)
        await call.run.open_window()
        health = Health(server.url)
        start, started = wire.of(ssrc), time.monotonic()
        for _ in range(100):  # five seconds
            latest = next(seq for s, seq, _ in reversed(wire.datagrams) if s == ssrc)
            pids = [latest - 16 - 17 * j for j in range(30)]
            items = [(pids[n % len(pids)], 0xFFFF) for n in range(335)]
            compound = nack_packet(0x1234, ssrc, items)
            assert len(compound) == 1352
            await send_rtcp(attacker.subscribe_pc, compound)
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        arrived = wire.of(ssrc) - start
        p99 = await health.p99_ms()
        gap = control_gap(await call.measure({"control-a", "control-b"}))
        # 50 packets a second, each once more at most, and the burst (32 KiB of
        # these ~100-byte packets); before: 5,600 a NACK, 560,000 in all
        assert arrived < 50 * seconds * 2 + 400, arrived
        assert p99 < 50, f"/healthz p99 {p99:.1f} ms during the storm"
        print(
            f"\nNACK storm: {arrived} packets in {seconds:.1f} s, /healthz p99 "
            f"{p99:.1f} ms, control gap {gap:.0f} ms"
        )
    finally:
        await asyncio.gather(speaker.close(), attacker.close(), return_exceptions=True)
        await call.close()


async def test_a_nack_at_the_end_of_the_sequence_space_is_just_numbers(server, clients):
    """A NACK with PID 0xFFFF and every bit set named 16 numbers past 16 bits:
    the server raised OverflowError. Now they wrap, and a NACK still works."""
    failures: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, ctx: failures.append(ctx)
    )
    wire = Wire()
    listener = clients(server, "listener")
    await listener.join("room")
    speaker = await tone_participant(clients, server, "speaker", 440)
    ssrc = await listening(listener, speaker.peer_id, wire)
    await send_rtcp(listener.subscribe_pc, nack_packet(1, ssrc, [(0xFFFF, 0xFFFF)]))
    await asyncio.sleep(0.2)
    assert not failures, failures
    lost = next(seq for s, seq, _ in reversed(wire.datagrams) if s == ssrc) - 5
    await send_rtcp(listener.subscribe_pc, nack_packet(1, ssrc, [(lost, 0)]))
    # the packet arrives again
    await settle(
        lambda: sum(1 for s, q, _ in wire.datagrams if (s, q) == (ssrc, lost)) == 2
    )
    assert not failures, failures


def ssrc_flood(copies: int) -> OwnPackets:
    """A rewrite that sends each packet again under ``copies`` other SSRCs,
    100 of them in turn."""
    count = 0

    def rewrite(data: bytes) -> list[bytes]:
        nonlocal count
        count += 1
        return [data] + [
            with_header(data, ssrc=0x5EED0000 + (count * copies + k) % 100)
            for k in range(copies)
        ]

    return rewrite


async def test_an_ssrc_flood_is_dropped_and_the_flooder_leaves_no_seat(abuse_server):
    """Finding 3: a publisher that sends 100 SSRCs. Before, aiortc's receiver
    report no longer fit, its RTCP task died, its stop() never returned, the
    participant never left and its channel leaked. Now SSRCs it did not
    negotiate are dropped in C (beyond a small margin), and whatever aiortc
    does, a leave is bounded: join, flood and leave three times, and nothing
    is left; the others' audio and the server's latency are unaffected."""
    server = abuse_server
    call = await Call.start(server, CONTROL)
    speaker, listener = (
        voice_client(server, "speaker"),
        voice_client(server, "listener"),
    )
    flooders: list[VoiceClient] = []
    try:
        await speaker.join("flood")
        await speaker.publish(microphone=ToneTrack(440))
        await listener.join("flood")
        await listener.publish(microphone=ToneTrack(660))  # both ends of both
        wire = Wire()
        ssrc = await listening(listener, speaker.peer_id, wire)
        await speaker.wait_for_track(listener.peer_id)
        before = await server.census()
        await call.run.open_window()
        health = Health(server.url)
        for n in range(3):
            flooder = voice_client(server, f"flooder{n}")
            flooders.append(flooder)
            await flooder.join("flood")
            await flooder.publish(microphone=ToneTrack(440))
            own = OwnPackets(flooder.publish_pc, ssrc_flood(8))
            await settle(lambda own=own: own.sent > 2000, timeout=15)
            await flooder.leave()
            await server.until(lambda c: c["participants"] == before["participants"])
        p99 = await health.p99_ms()
        gap = control_gap(await call.measure({"control-a", "control-b"}))
        heard = wire.of(ssrc)
        await settle(lambda: wire.of(ssrc) > heard + 25)  # the speaker goes on
        after = await server.settled(before, LEAK_KEYS)
        assert not changed(before, after), changed(before, after)
        assert_no_leaked_peer_connections(before, after)
        assert p99 < 50, f"/healthz p99 {p99:.1f} ms during the flood"
        print(f"\nSSRC flood: /healthz p99 {p99:.1f} ms, control gap {gap:.0f} ms")
    finally:
        await asyncio.gather(
            speaker.close(),
            listener.close(),
            *(f.close() for f in flooders),
            return_exceptions=True,
        )
        await call.close()


@pytest.fixture
async def abuse_server():
    server = await CensusServer.start()
    try:
        yield server
        assert server.proc.poll() is None, "the server died"
    finally:
        server.stop()


def sequence_jumps(ssrc: int, copies: int) -> OwnPackets:
    """A rewrite that sends each packet of ``ssrc`` as ``copies`` packets, each
    numbered 30,000 past the one before (the rest goes out as it is)."""
    jumps = 0

    def rewrite(data: bytes) -> list[bytes]:
        nonlocal jumps
        if int.from_bytes(data[8:12], "big") != ssrc:
            return [data]
        out = []
        for _ in range(copies):
            jumps += 1
            seq = int.from_bytes(data[2:4], "big") + 30000 * jumps
            out.append(with_header(data, seq=seq))
        return out

    return rewrite


async def test_video_sequence_jumps_cost_the_server_little(abuse_server):
    """Finding 4: a screen share numbered 30,000 further at every packet. The
    NACK generator listed every number skipped (30,000 set insertions a
    packet); now a jump starts it over. The server's CPU stays low, the
    others' audio does not gap, and the viewer is still sent the share."""
    server = abuse_server
    call = await Call.start(server, CONTROL)
    sharer, viewer = voice_client(server, "sharer"), voice_client(server, "viewer")
    try:
        await viewer.join("jumps")
        await sharer.join("jumps")
        await sharer.publish(microphone=ToneTrack(440), screen=CounterScreen())
        await viewer.wait_for_track(sharer.peer_id, "screen")
        video = sharer.published["screen"].sender._ssrc  # the attacker's own
        own = OwnPackets(sharer.publish_pc, sequence_jumps(video, 10))
        await call.run.open_window()
        health = Health(server.url)
        process = psutil.Process(server.proc.pid)
        sent, cpu = own.sent, process.cpu_times()
        started = time.monotonic()
        await asyncio.sleep(4)
        used = sum(process.cpu_times()[:2]) - sum(cpu[:2])
        share = used / (time.monotonic() - started)
        p99 = await health.p99_ms()
        gap = control_gap(await call.measure({"control-a", "control-b"}))
        assert own.sent - sent > 1000  # the attack ran
        assert share < 0.5, f"the server used {share:.0%} of a core"
        assert p99 < 50, f"/healthz p99 {p99:.1f} ms"
        print(
            f"\nsequence jumps: server CPU {share:.0%}, /healthz p99 {p99:.1f} ms, "
            f"control gap {gap:.0f} ms"
        )
    finally:
        await asyncio.gather(sharer.close(), viewer.close(), return_exceptions=True)
        await call.close()
