"""Diagnostics over HTTP and the socket: permissions, client stats, metrics,
audio-data logging, retention of departed peers."""

import asyncio
import logging
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from diagnostics import client_stats, logs
from miscord_client.client import ServerError
from tests.diag_call import connected, diag_server, fetch, participant, wait_report


async def test_permissions(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440, stats=False)
    b = await participant(clients, server, "bob", 660, stats=False)
    mine, theirs = f"/api/peers/{a.peer_id}", f"/api/peers/{b.peer_id}"
    for path in (f"{mine}/stats", f"{mine}/report"):
        assert (await fetch(server, path, token="alice"))[0] == 200
        assert (await fetch(server, path, token=None))[0] == 401
    for path in (f"{theirs}/stats", f"{theirs}/report", "/api/peers"):
        assert (await fetch(server, path, token="alice"))[0] == 403
        assert (await fetch(server, path))[0] == 200  # support
    assert (await fetch(server, "/api/peers", token=None))[0] == 401
    assert (await fetch(server, "/api/peers/000000000000/report"))[0] == 404
    # audio-data logging: support, or the peer's own user (the web client asks)
    for path, status in ((theirs, 403), (mine, 200)):
        for enabled in (True, False):
            reply = await fetch(
                server,
                f"{path}/audio-logging",
                "alice",
                method="POST",
                json={"enabled": enabled},
            )
            assert reply[0] == status
    status, peers = await fetch(server, "/api/peers")
    assert {p["peer_id"] for p in peers} == {a.peer_id, b.peer_id}
    assert all(p["live"] for p in peers)
    # the same report as a page
    for kwargs in (
        {"headers": {"Accept": "text/html"}},
        {"params": {"format": "html"}},
    ):
        status, page = await fetch(server, f"{mine}/report", "alice", **kwargs)
        assert status == 200 and page.startswith("<!doctype html>")
        assert "<script" not in page  # nothing to load, nothing to run


async def test_client_stats_are_validated_and_limited(start_server, clients):
    server = await diag_server(start_server, client_stats_bytes=2000)
    a = await participant(clients, server, "alice", 440, stats=False)

    async def error_of(report) -> str:
        with pytest.raises(ServerError) as caught:
            await a.request({"type": "stats", "report": report}, timeout=3)
        return caught.value.code

    good = {"outbound": [{"source": "microphone", "packetsSent": 10}], "extra": 1}
    await a.send_stats(good)
    assert await error_of(good) == "rate_limited"
    await asyncio.sleep(1.0)
    assert await error_of({"padding": "x" * 3000}) == "too_large"
    for bad in (
        [],
        {"inbound": [{"peer_id": 5}]},
        {"inbound": [{"source": "microphone"}]},
        {"outbound": [{"packetsSent": "10"}]},
        {"outbound": [{"trackMuted": "yes"}]},
        {"inbound": "all"},
        {"candidatePair": {"publish": {"currentRoundTripTime": -1}}},
    ):
        assert await error_of(bad) == "bad_message", bad
    assert await a.ping()  # the connection stays
    status, stats = await fetch(server, f"/api/peers/{a.peer_id}/stats")
    assert status == 200
    assert stats["client"]["outbound"] == [
        {
            "source": "microphone",
            "packetsSent": 10.0,
            "trackMuted": None,
            "trackEnabled": None,
            "trackReadyState": None,
        }
    ]
    assert "extra" not in stats["client"]


async def test_metrics(start_server, clients, sockets):
    server = await diag_server(start_server)
    other = await diag_server(start_server)  # a registry per server, not global
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"), kind="events")
    await asyncio.sleep(1.5)  # a few collector ticks of forwarding
    await a.mute("microphone", True)
    await a.send({"type": "mute"})  # an error: bad_message
    await wait_report(server, a.peer_id, lambda r: r["findings"])
    muted = ("miscord_findings", (("code", "muted"), ("severity", "info")))
    # findings are counted a share of the peers per stats interval, not per scrape
    deadline = time.monotonic() + 5
    while True:
        status, text = await fetch(server, "/metrics", token=None)
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        if muted in samples or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert samples["miscord_connections", (("kind", "voice"),)] == 2
    assert samples["miscord_connections", (("kind", "events"),)] == 1
    assert samples["miscord_participants", ()] == 2
    assert samples["miscord_channels", ()] == 1
    assert samples["miscord_channel_participants", (("channel", "room"),)] == 2
    # the process's own, for dashboards (prometheus-client's process collector)
    assert samples["process_cpu_seconds_total", ()] > 0
    assert samples["process_resident_memory_bytes", ()] > 10_000_000
    assert samples["process_open_fds", ()] > 10
    # three joins, each answered in well under a second
    assert samples["miscord_join_seconds_count", ()] == 3
    assert samples["miscord_join_seconds_bucket", (("le", "1.0"),)] == 3
    # every forwarded packet's fan-out, in microseconds
    fanout = samples["miscord_fanout_seconds_count", ()]
    assert fanout > 50
    assert samples["miscord_fanout_seconds_bucket", (("le", "0.01"),)] == fanout
    assert samples["miscord_forwarded_packets_total", ()] > 50
    assert samples["miscord_forwarded_bytes_total", ()] > 5000
    assert samples["miscord_errors_total", (("code", "bad_message"),)] >= 1
    assert samples[muted] == 1
    assert samples["miscord_keyframe_requests_total", (("sent", "true"),)] == 0
    assert samples["miscord_stats_collector_seconds_count", ()] > 2
    assert 0 < samples["miscord_stats_collector_seconds_sum", ()] < 1
    status, text = await fetch(other, "/metrics", token=None)
    assert status == 200 and "miscord_participants 0.0" in text


class Lines(logging.Handler):
    """Collects formatted log lines as the server prints them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.EmojiFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def voice_lines():
    handler = Lines()
    logger = logs.get("voice")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


AUDIO_LINE = re.compile(
    r"🎙️ audio of (\w+): RMS (-?[\d.]+) dBFS, peak (-?[\d.]+) dBFS, "
    r"clipping ([\d.]+) %, (sound|silence), (\d+) packets/s, (\d+) frames/s"
)


async def test_audio_data_logging_on_and_off(start_server, clients, voice_lines):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", None)
    await connected(server, a, b)
    path = f"/api/peers/{a.peer_id}/audio-logging"
    pub = server.services.sfu.participants[a.peer_id].publish.by_source("microphone")
    assert pub.taps == []  # off by default
    status, body = await fetch(server, path, method="POST", json={"enabled": True})
    assert status == 200 and body == {"peer_id": a.peer_id, "audio_logging": True}
    assert len(pub.taps) == 1
    forwarded = pub.forwarded
    deadline = time.monotonic() + 6
    while len(matches := [AUDIO_LINE.search(x) for x in voice_lines.lines]) < 3 or (
        sum(m is not None for m in matches) < 2
    ):
        assert time.monotonic() < deadline, voice_lines.lines
        await asyncio.sleep(0.1)
    heard = [m for m in matches if m is not None][-1]
    assert heard.group(1) == a.peer_id
    # a 0.3 full-scale sine is -10.5 dBFS; aiortc's mono-to-stereo upmix takes
    # 3 dB off each channel: peak -13.5 dBFS, RMS 3 dB lower
    assert -15 < float(heard.group(3)) < -12, heard.group(0)
    assert -18 < float(heard.group(2)) < -15, heard.group(0)
    assert heard.group(5) == "sound" and float(heard.group(4)) == 0
    assert 40 <= int(heard.group(6)) <= 60 and 40 <= int(heard.group(7)) <= 60
    assert pub.forwarded > forwarded  # forwarding went on
    status, _ = await fetch(server, path, method="POST", json={"enabled": False})
    assert status == 200 and pub.taps == []
    assert server.services.diagnostics.audio_loggers == {}
    count = len(voice_lines.lines)
    await asyncio.sleep(1.5)
    assert not any(AUDIO_LINE.search(x) for x in voice_lines.lines[count:])
    # nothing to log for a peer without a microphone
    status, _ = await fetch(
        server,
        f"/api/peers/{b.peer_id}/audio-logging",
        method="POST",
        json={"enabled": True},
    )
    assert status == 409


async def test_departed_peers_are_kept_for_a_while_and_bounded(start_server, clients):
    server = await diag_server(
        start_server, timeline_max_peers=1, timeline_retention=2.0
    )
    ids = []
    for user in ("alice", "bob"):
        client = clients(server, user)
        await client.join("room")
        ids.append(client.peer_id)
        await client.leave()
    await asyncio.sleep(0.2)
    assert (await fetch(server, f"/api/peers/{ids[0]}/report"))[0] == 404  # count
    status, body = await fetch(server, f"/api/peers/{ids[1]}/report")
    assert status == 200 and body["live"] is False
    assert body["timeline"][-1]["detail"] == {"reason": "left"}
    await asyncio.sleep(2.5)
    assert (await fetch(server, f"/api/peers/{ids[1]}/report"))[0] == 404  # time


def test_client_report_parsing():
    parsed = client_stats.parse(
        {
            "timestamp": 1.0,
            "inbound": [{"peer_id": "p", "packetsReceived": 5, "unknown": "x"}],
            "candidatePair": {"subscribe": {"currentRoundTripTime": 0.02}},
        },
        10.0,
        16384,
    )
    assert parsed.inbound_from("p").numbers == {"packetsReceived": 5.0}
    assert parsed.rtt == {"subscribe": 0.02}
    with pytest.raises(client_stats.ClientStatsError) as caught:
        client_stats.check_rate(parsed, 10.5)
    assert caught.value.code == "rate_limited"
    client_stats.check_rate(parsed, 11.0)
