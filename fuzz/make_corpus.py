#!/usr/bin/env python3
"""Write fanout_fuzz.c's seed corpus: a few op sequences in its encoding (see
the comments of its run_op, read_pkt, rtp_datagram, datagram and rtcp_packet)
that reach each part of the fast path with valid RTP and RTCP. Standard
library only: fuzz/make_corpus.py [DIR] (default: fuzz/corpus)."""

import pathlib
import struct
import sys

OPS = [
    "pub_new", "pub_free", "pub_set", "sub_new", "sub_free", "sub_ready",
    "configure", "bind", "publish", "nack", "report", "sr_sent", "stream_add",
    "route", "admit", "ingest", "drain", "rtcp", "python", "time", "flush",
    "refuse", "anchor", "add_time", "active",
]  # fmt: skip

NEXT = 5  # a seq byte: the previous sequence number + 1
LEVEL_ID = 1  # level_ids[1], the publisher's audio level extension id
MS_11, MS_510 = 4, 11  # time steps (indexes into steps[])
SETUP = 0x06 | 1 << 3  # margin 6, py_rate 2000: a publish connection's


def op(name: str, *args: int | bytes) -> bytes:
    out = bytes([OPS.index(name)])
    for arg in args:
        out += arg if isinstance(arg, bytes) else bytes([arg])
    return out


def u16(value: int) -> bytes:
    return struct.pack("!H", value & 0xFFFF)


def pkt(
    known: int = 0,
    seq: int = NEXT,
    *,
    level: int | None = None,
    marker: int = 0,
    size: int = 100,
    seed: int = 1,
    raw_ssrc: int | None = None,
    raw_seq: int | None = None,
) -> bytes:
    """read_pkt: a known SSRC (or a raw one), a seq step (or a raw seq)."""
    out = bytes([known])
    if raw_ssrc is not None:
        out = bytes([0x80 | known]) + struct.pack("!I", raw_ssrc)
    out += bytes([seq]) if raw_seq is None else b"\x80" + u16(raw_seq)
    flags = marker | (0 if level is None else 2)
    out += bytes([8, flags]) + (b"" if level is None else bytes([level]))
    return out + bytes([size, seed])


def rtp(
    packet: bytes,
    *,
    csrc: int = 0,
    ext: int = 0,
    elements: tuple[tuple[int, int], ...] = (),
    level_at: int = 0,
    pad: int | None = None,
    long_ext: int = 0,
    tag: int = 0,
    cut: int = 0,
) -> bytes:
    """rtp_datagram: ext 1 one-byte, 2 two-byte, with elements (id, size)
    besides the level; tag 0 valid, 1 valid on a datagram cut short, 2 forged."""
    padded = 0 if pad is None else 0x10
    opts = csrc | ext << 2 | padded | long_ext << 5 | tag << 6
    out = b"\x00" + packet + bytes([opts])
    if ext:
        out += bytes([len(elements) | level_at << 2])
        out += b"".join(bytes(element) for element in elements)
    if pad is not None:
        out += bytes([pad])
    return out + (bytes([cut]) if tag == 1 else b"")


def reports(blocks: list[tuple[int, int, int]], kind: int = 1, lie: int = 0) -> bytes:
    """An SR (kind 0) or RR (1) with blocks (subscriber, lsr selector, dlsr)."""
    return bytes([kind | lie << 3, len(blocks)]) + b"".join(map(bytes, blocks))


def nack(sub: int, items: int, back: int, blp: int) -> bytes:
    return bytes([3, sub, items, back]) + u16(blp)


def rtcp(*packets: bytes, tag: int = 0) -> bytes:
    return op("rtcp", len(packets) - 1, *packets, tag)


def subscriber(
    slot: int,
    pub: int = 0,
    *,
    flags: int = 0,
    rtx: int = 112,
    ids: int = 0x21,
) -> bytes:
    """A fast-path m-line (flags: 1 a small socket buffer, 2 video; its mid
    is "0"), its transport up, negotiated (Opus 111; ids: the mid's extension
    id low, the level's high, 0 none) and bound."""
    return (
        op("sub_new", flags)
        + op("sub_ready", slot)
        + op("configure", slot, 0x80 | 111, rtx, ids)
        + op("bind", slot, pub)
    )


WORLD = op("pub_new", 0, 1) + subscriber(0) + subscriber(1, ids=0x32)
ROUTED = op("admit", 0, 1) + op("route", 0)


def publishes(count: int, known: int = 0, pub: int = 0, **packet: int) -> bytes:
    return b"".join(
        op("publish", pub, pkt(known, seed=i, marker=i % 7 == 0, **packet), 0xFF)
        for i in range(count)
    )


def seeds() -> dict[str, bytes]:
    ingested = [
        rtp(pkt(level=20), ext=1, elements=((0x30, 2),), level_at=1),
        rtp(pkt(level=90, marker=1), ext=2, elements=((7, 3), (9, 0))),
        rtp(pkt(size=60), csrc=2, pad=4),
        rtp(pkt(size=3), pad=0x84),  # padding longer than the payload
        rtp(pkt(), ext=1, long_ext=1),
        rtp(pkt(), tag=2),
        rtp(pkt(), csrc=3, tag=1, cut=20),
        rtp(pkt(seq=NEXT - 1)),  # a duplicate
        rtp(pkt(raw_ssrc=0x0BADCAFE)),  # an SSRC within the margin
        bytes([5, 4, 1, 2, 3, 4, 0]),  # raw bytes
    ]
    batch = [rtp(pkt(level=40), ext=1) for _ in range(5)]
    # empty, short, oversized, STUN, RTCP
    odd = [b"\x07\x00", b"\x07\x15", b"\x07\x02", b"\x07\x03", b"\x06\x01\x02"]
    # big forward steps (each clamped to FAN_MAX_JUMP) take the outgoing
    # numbering past a rollover, then NACKs reach back
    jumps = b"".join(
        op("publish", 0, pkt(raw_seq=i * 600, seed=i), 0xFF) for i in range(140)
    )
    parts = {
        "publish_nack": [
            WORLD,
            publishes(24, level=30),
            *(op("nack", 0, back, *u16(0x0105), MS_11) for back in (1, 3, 8, 3)),
            op("sr_sent", 1, 1),
            op("report", 1, 0x80, *u16(900), 2),
            op("nack", 1, 2, *u16(3), 1),
        ],
        "ingest": [
            WORLD,
            ROUTED,
            *(op("ingest", LEVEL_ID, datagram, 0xFF) for datagram in ingested),
            op("nack", 0, 2, *u16(0xFFFF), MS_11),
            # the SSRC table fills up
            *(op("admit", 0x80, *struct.pack("!I", 0x7000 + i), 1) for i in range(17)),
        ],
        "drain": [
            WORLD,
            ROUTED,
            op("drain", LEVEL_ID, len(batch) - 1, *batch, 0xFF),
            op("drain", LEVEL_ID, len(odd) + 1, *batch[:2], *odd, 0xFF),
            op("pub_set", 0, 1),  # a tap: everything through Python
            op("drain", LEVEL_ID, 1, *batch[:2], 0xFF),
        ],
        "rtcp": [
            WORLD,
            publishes(40, size=200),
            op("sr_sent", 0, 1),
            op("sr_sent", 1, 1),
            rtcp(
                reports([(0, 0x80, 3), (1, 0x81, 200)], kind=0),
                b"\x02\x0c",  # SDES
                nack(0, 3, 5, 0x8001),
                b"\x04\x01",  # PLI
            ),
            rtcp(nack(1, 70, 30, 0xFFFF), b"\x05", b"\x06\x02"),  # BYE, APP
            rtcp(*(reports([(1, 0, 1)] * n) for n in (31, 31, 3))),  # 65 blocks
            rtcp(b"\x07\x08\x81\xcd\x00\x01\x00\x00\x00\x00"),  # a NACK too short
            rtcp(reports([], lie=2), tag=2),
        ],
        "switch_mute_rebind": [
            WORLD,
            op("pub_new", 1, 0),
            subscriber(2, flags=2),
            publishes(6),
            op("time", MS_510),
            publishes(4, known=2),  # the SSRC changes
            publishes(2, known=0),
            op("pub_set", 0, 0),  # muted, then not
            publishes(3, known=2),
            op("pub_set", 0, 0),
            publishes(3, known=2),
            op("bind", 1, 1),
            op("nack", 1, 1, *u16(0), 1),
            publishes(3, known=1, pub=1),
            op("nack", 1, 1, *u16(0), 1),
            op("sub_free", 1),
            op("pub_free", 0),
            op("pub_new", 0, 0),
        ],
        # a subscriber moves to a publication whose stream has the same SSRC
        # and sequence numbers (a publisher may choose both)
        "rebind": [
            op("pub_new", 0, 0),
            op("pub_new", 1, 0),
            subscriber(0, rtx=0),
            subscriber(1, pub=1),
            *(
                op("publish", pub, pkt(raw_seq=100 + i, seed=pub), 0xFF)
                for pub in (0, 1)
                for i in range(10)
            ),
            op("bind", 0, 1),
            op("publish", 1, pkt(raw_seq=110, seed=1), 0xFF),
            op("nack", 0, 3, *u16(0), 1),
        ],
        "big_rtx_budget": [
            op("pub_new", 0, 0),
            subscriber(0, flags=1, ids=0),
            subscriber(1),
            publishes(30, size=0xFB, level=10),  # 1488 bytes: 1500 with the header
            op("nack", 0, 1, *u16(0x000F), 1),
            op("flush", 0),
            op("nack", 1, 1, *u16(0x000F), 1),
            op("refuse", 1),
            op("nack", 1, 5, *u16(0x000F), 1),
            publishes(2, size=0xFF),
        ],
        "rollover": [
            WORLD,
            jumps,
            op("nack", 0, 1, *u16(0xFFFF), 1),
            op("nack", 0, 0x80, *u16(0xFFF0), *u16(0xFFFF), 1),
        ],
    }
    return {name: bytes([SETUP]) + b"".join(ops) for name, ops in parts.items()}


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here / "corpus"
    target.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (target / name).write_bytes(data)
        print(f"{target / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
