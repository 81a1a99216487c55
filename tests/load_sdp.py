"""Mutated SDP for abuse tests: real aiortc descriptions, broken on purpose.

Each mutant applies one to three operators chosen by a seeded ``Random``:
truncation, wrong ordering, huge attributes, bogus fingerprints, codecs,
m-lines, ICE credentials, directions and mids, stray bytes. A few leave the
description valid (an attribute the parser ignores, a reordering within a
section), as real clients' quirks do.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from miscord_client import ice
from miscord_client.rtc import close_peer_connection, new_peer_connection

Mutator = Callable[[random.Random, list[str]], list[str]]


async def real_offer(video: bool = False) -> str:
    """A publish offer as VoiceClient makes it (audio, optionally video)."""
    ice.install()
    pc = new_peer_connection()
    pc.addTransceiver("audio", direction="sendonly")
    if video:
        pc.addTransceiver("video", direction="sendonly")
    ice.prepare(pc, ice.LOOPBACK)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await close_peer_connection(pc)
    return sdp


async def real_answer(offer: str) -> str:
    """A subscriber's answer to the server's subscribe offer."""
    from aiortc import RTCSessionDescription

    ice.install()
    pc = new_peer_connection()
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    ice.prepare(pc, ice.LOOPBACK)
    await pc.setLocalDescription(await pc.createAnswer())
    sdp = pc.localDescription.sdp
    await close_peer_connection(pc)
    return sdp


def _sections(lines: list[str]) -> list[list[str]]:
    """The session part, then one list per m-line."""
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _replace(pattern: str, make: Callable[[random.Random], str]) -> Mutator:
    regex = re.compile(pattern)

    def mutate(rng: random.Random, lines: list[str]) -> list[str]:
        hits = [i for i, line in enumerate(lines) if regex.match(line)]
        if not hits:
            return lines
        lines = list(lines)
        lines[rng.choice(hits)] = make(rng)
        return lines

    return mutate


def truncate(rng: random.Random, lines: list[str]) -> list[str]:
    text = "\r\n".join(lines)
    return text[: rng.randrange(max(1, len(text)))].split("\r\n")


def drop_line(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    del lines[rng.randrange(len(lines))]
    return lines or ["v=0"]


def duplicate_line(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines)), lines[i])
    return lines


def swap_lines(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return lines


def shuffle_section(rng: random.Random, lines: list[str]) -> list[str]:
    """Attribute order within one m-line's section (often still valid)."""
    sections = _sections(lines)
    index = rng.randrange(1, len(sections)) if len(sections) > 1 else 0
    head, rest = sections[index][:1], sections[index][1:]
    rng.shuffle(rest)
    sections[index] = head + rest
    return [line for section in sections for line in section]


def reorder_sections(rng: random.Random, lines: list[str]) -> list[str]:
    """m-lines reversed, or the session part after them."""
    sections = _sections(lines)
    if rng.random() < 0.5:
        sections = [sections[0], *reversed(sections[1:])]
    else:
        sections = [*sections[1:], sections[0]]
    return [line for section in sections for line in section]


def huge_attribute(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    size = rng.choice((1_000, 50_000, 150_000, 199_000, 260_000))
    name = rng.choice(("x-huge", "ice-ufrag", "fmtp:111 ", "ssrc:1 cname:", "mid"))
    lines.insert(rng.randrange(len(lines) + 1), f"a={name}:" + "A" * size)
    return lines


def _fingerprint(rng: random.Random) -> str:
    hexes = ":".join(f"{rng.randrange(256):02X}" for _ in range(32))
    return rng.choice(
        (
            f"a=fingerprint:sha-256 {hexes[:-3]}",  # one byte short
            f"a=fingerprint:sha-256 {hexes.replace(':', '')}",  # no colons
            f"a=fingerprint:md5 {hexes[:47]}",  # unknown algorithm
            f"a=fingerprint:sha-256 {'ZZ:' * 31}ZZ",  # not hex
            "a=fingerprint:sha-256",
            "a=fingerprint:",
            f"a=fingerprint:sha-512 {hexes}",  # wrong length for sha-512
            f"a=fingerprint:sha-256 {hexes}:" + "AB:" * 5000 + "CD",
        )
    )


def _codec(rng: random.Random) -> str:
    return rng.choice(
        (
            "a=rtpmap:111 FOO/48000/2",
            "a=rtpmap:999 opus/48000/2",
            "a=rtpmap:111 opus/0/2",
            "a=rtpmap:111 opus/-48000/2",
            "a=rtpmap:111",
            "a=rtpmap:abc opus/48000/2",
            "a=rtpmap:111 opus/48000/999999999999",
            "a=rtpmap:96 VP8/90000/" + "9" * 40,
            "a=fmtp:111 ;;;===;;;",
            "a=fmtp:111 minptime=-1;useinbandfec=banana",
            "a=rtcp-fb:111 " + "nack " * 200,
        )
    )


def _mline(rng: random.Random) -> str:
    return rng.choice(
        (
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "m=audio notaport UDP/TLS/RTP/SAVPF 111",
            "m=audio 9 UDP/TLS/RTP/SAVPF",
            "m=audio 9 UDP/TLS/RTP/SAVPF 999 1000",
            "m=text 9 RTP/AVP 0",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 " + "97 " * 300,
            "m=",
        )
    )


def no_ice(rng: random.Random, lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(("a=ice-ufrag", "a=ice-pwd"))]


def same_mids(rng: random.Random, lines: list[str]) -> list[str]:
    return ["a=mid:0" if line.startswith("a=mid:") else line for line in lines]


def many_mlines(rng: random.Random, lines: list[str]) -> list[str]:
    sections = _sections(lines)
    extra = [
        [line.replace("a=mid:0", f"a=mid:x{k}") for line in sections[-1]]
        for k in range(rng.choice((2, 9, 40)))
    ]
    return [line for section in sections + extra for line in section]


def stray_bytes(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    junk = rng.choice(("\x00\x01\x02", "ÿþ\ufffd", "\u202e", "=", " ", "\t"))
    i = rng.randrange(len(lines))
    lines[i] = lines[i][: len(lines[i]) // 2] + junk + lines[i][len(lines[i]) // 2 :]
    return lines


def line_endings(rng: random.Random, lines: list[str]) -> list[str]:
    """Bare LF or CR line endings instead of CRLF."""
    return ["\n".join(lines) if rng.random() < 0.5 else "\r".join(lines)]


#: operators that a lenient parser (aiortc's) mostly accepts: reordering,
#: duplicates, harmless oddities
TOLERATED: list[Mutator] = [
    drop_line,
    duplicate_line,
    swap_lines,
    shuffle_section,
    reorder_sections,
    huge_attribute,
    same_mids,
    line_endings,
    _replace(r"a=group:BUNDLE", lambda rng: "a=group:BUNDLE 7 8 9"),
    _replace(r"a=ice-ufrag:", lambda rng: "a=ice-ufrag:" + "u" * 300),
    _replace(
        r"a=(sendonly|recvonly|sendrecv|inactive)",
        lambda rng: rng.choice(("a=sendrecv", "a=recvonly", "a=inactive", "a=bogus")),
    ),
    _replace(r"a=(rtpmap|fmtp|rtcp-fb):", _codec),
]
#: operators that break the description
BREAKING: list[Mutator] = [
    truncate,
    stray_bytes,
    no_ice,
    many_mlines,
    _replace(r"a=fingerprint:", _fingerprint),
    _replace(r"m=", _mline),
    _replace(r"a=setup:", lambda rng: rng.choice(("a=setup:", "a=setup:holdconn"))),
    _replace(r"a=candidate:", lambda rng: "a=candidate:1 1 udp x 1.2.3.4 y typ z"),
]
MUTATORS = TOLERATED + BREAKING
#: so that a still valid mutant is rare (under a tenth)
WEIGHTS = [1] * len(TOLERATED) + [6] * len(BREAKING)


def mutants(template: str, count: int, seed: int) -> list[str]:
    """``count`` mutants of ``template``, each one to three operators deep."""
    rng = random.Random(seed)
    lines = template.rstrip("\r\n").split("\r\n")
    out = []
    for _ in range(count):
        mutated = lines
        for mutate in rng.choices(MUTATORS, WEIGHTS, k=rng.choice((1, 2, 2, 3))):
            mutated = mutate(rng, mutated)
        out.append("\r\n".join(mutated) + "\r\n")
    return out
