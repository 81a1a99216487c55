"""What a listener receives at 10 % random uplink loss, with Opus in-band FEC
negotiated and without (issue 18).

The publisher (aiortc, in this process) sends real Opus: a voiced,
speech-like signal encoded up front by libopus (SILK wideband, 24 kbit/s,
``application=voip``), either with FEC (``fec=1``, ``packet_loss=10``, its
offer asking for ``useinbandfec=1``, which the server's answer keeps) or
without (a bare offer, ``fec=0``). It drops 10 % of its own RTP packets at
random before they leave: the uplink loss. The listener is the web client in
headless Chromium, whose receiver (NetEq) decodes what the server forwards
and counts in its ``inbound-rtp`` statistics the samples it had to conceal.
Runs alternate (fec, plain, plain, fec, ...) in one server process.

    scripts/bench opus_fec --rounds 2 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from playwright.async_api import async_playwright

from benchmarks.common import SECRET, ServerProcess, fmt, machine, publish
from miscord_client.client import VoiceClient
from miscord_client.load.media import AUDIO_RATE, StampedAudio
from signaling import auth
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, write_tone
from tests.e2e.webpage import CallPage
from tests.faults import OutgoingFault

LOSS = 0.10
#: what the listener's receiver counted, from its inbound-rtp statistics
COUNTERS = (
    "packetsReceived",
    "packetsLost",
    "totalSamplesReceived",
    "concealedSamples",
    "silentConcealedSamples",
    "concealmentEvents",
    "fecPacketsReceived",
)
INBOUND = """([mid]) => window.miscord.voiceService.subscribePc.getStats().then(
  (report) => [...report.values()].find(
    (s) => s.type === "inbound-rtp" && s.kind === "audio" && s.mid === mid) ?? null)"""


def encode_voice(fec: bool, seconds: float = 10.0) -> list[bytes]:
    """Opus packets (20 ms) of a voiced signal: 140 Hz harmonics whose pitch
    wanders and whose loudness rises and falls four times a second."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = AUDIO_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 24000
    encoder.options = {
        "application": "voip",
        "cutoff": "8000",  # wideband: SILK, where libopus puts its FEC
        "fec": "1" if fec else "0",
        "packet_loss": str(round(LOSS * 100)),
    }
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t)))
    voiced = sum(np.sin(k * phase / AUDIO_RATE) / k for k in range(1, 15))
    signal = voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    samples = (0.1 * 32767 * signal).astype(np.int16)
    packets: list[bytes] = []
    for i in range(len(samples) // 960):
        frame = av.AudioFrame.from_ndarray(
            samples[i * 960 : (i + 1) * 960].reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * 960
        packets.extend(bytes(p) for p in encoder.encode(frame))
    return packets


@dataclass
class Site:
    """What ``CallPage`` needs of a server."""

    url: str

    def token(self, user: str) -> str:
        return auth.issue(SECRET, user, ["*"])


@dataclass
class Run:
    mode: str
    #: the listener's counters over the run, and what the publisher dropped
    #: and sent (RTP, RTCP and ICE)
    deltas: dict[str, float]

    @property
    def dropped_pct(self) -> float:
        d = self.deltas
        return 100 * d["dropped"] / (d["dropped"] + d["sent"])

    @property
    def loss_pct(self) -> float:
        d = self.deltas
        return 100 * d["packetsLost"] / (d["packetsReceived"] + d["packetsLost"])

    @property
    def concealed_pct(self) -> float:
        d = self.deltas
        return 100 * d["concealedSamples"] / d["totalSamplesReceived"]


async def one_run(
    site: Site, listener: CallPage, mode: str, seconds: float, seed: int
) -> Run:
    fec = mode == "fec"
    publisher = VoiceClient(
        site.url,
        site.token(f"speaker-{seed}"),
        ["127.0.0.1"],
        opus_fmtp={"useinbandfec": 1} if fec else None,
    )
    try:
        await publisher.join("fec")
        await publisher.publish(microphone=StampedAudio(opus_frames=encode_voice(fec)))
        assert publisher.publish_pc is not None
        answer = publisher.publish_pc.remoteDescription.sdp
        if fec != ("useinbandfec=1" in answer):
            raise RuntimeError(f"{mode}: the server's answer says otherwise:\n{answer}")
        fault = OutgoingFault(publisher.publish_pc, drop=LOSS, seed=seed)
        mid = await listener.wait_for(
            "([peer]) => window.miscord.voiceService.remoteOf(peer)?.mid",
            [publisher.peer_id],
        )
        await asyncio.sleep(3.0)  # the jitter buffer settles
        before: dict[str, Any] = await listener.js(INBOUND, [mid])
        dropped, sent = fault.dropped, fault.sent
        await asyncio.sleep(seconds)
        after: dict[str, Any] = await listener.js(INBOUND, [mid])
        deltas = {k: float(after.get(k, 0) - before.get(k, 0)) for k in COUNTERS}
        deltas["dropped"] = fault.dropped - dropped
        deltas["sent"] = fault.sent - sent
        return Run(mode, deltas)
    finally:
        await publisher.leave()


async def main(args: argparse.Namespace) -> None:
    server = await ServerProcess.start()
    runs: list[Run] = []
    try:
        async with async_playwright() as playwright:
            with tempfile.TemporaryDirectory() as tmp:
                wav = write_tone(Path(tmp) / "mic.wav", 700)
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
                )
                page = await browser.new_page()
                site = Site(server.url)
                listener = await CallPage(page, site, "listener").goto()  # type: ignore[arg-type]
                await listener.join("listener", "fec")
                order = ["fec", "plain"]
                for n in range(args.rounds):
                    for mode in order if n % 2 == 0 else order[::-1]:
                        run = await one_run(site, listener, mode, args.seconds, n)
                        runs.append(run)
                        print(
                            f"{mode:5} dropped {run.dropped_pct:.1f} %, lost "
                            f"{run.loss_pct:.1f} %, concealed "
                            f"{run.concealed_pct:.2f} % of samples, "
                            f"{run.deltas['concealmentEvents']:.0f} concealment "
                            "events",
                            flush=True,
                        )
                await browser.close()
    finally:
        server.stop()
    lines = [
        "| Opus | runs | dropped by the publisher % | lost at the listener % | "
        "samples concealed % | concealment events per lost packet | "
        "fecPacketsReceived |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("fec", "plain"):
        mine = [r for r in runs if r.mode == mode]
        total = {k: sum(r.deltas[k] for r in mine) for k in mine[0].deltas}
        pooled = Run(mode, total)
        lines.append(
            f"| {'FEC negotiated' if mode == 'fec' else 'no FEC'} | {len(mine)} | "
            f"{pooled.dropped_pct:.1f} | {pooled.loss_pct:.1f} | "
            f"{pooled.concealed_pct:.2f} | "
            f"{fmt(total['concealmentEvents'] / max(1.0, total['packetsLost']), 2)} | "
            f"{total['fecPacketsReceived']:.0f} |"
        )
    body = (
        "## Opus FEC at 10 % uplink loss (`benchmarks/opus_fec.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench opus_fec --rounds "
        f"{args.rounds} --seconds {args.seconds:g}`: an aiortc publisher sends a "
        "speech-like signal as real Opus (libopus, SILK wideband 24 kbit/s), with "
        "in-band FEC negotiated (offer `useinbandfec=1`, kept in the server's "
        "answer, encoder `fec=1 packet_loss=10`) or without, dropping 10 % of its "
        "own RTP at random; the listener is the web client in headless Chromium "
        "(its `inbound-rtp` counters over each run, after 3 s of settling), runs "
        "alternating in one server process.\n\n"
        + "\n".join(lines)
        + "\n\nWith FEC the receiver rebuilds most lost packets from the redundancy "
        "in the next one instead of concealing them.\n"
    )
    publish(args, "opus_fec", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-write", dest="write", action="store_false")
    asyncio.run(main(parser.parse_args()))
