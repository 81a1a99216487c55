"""Diagnostics' plain records and bookkeeping: ``records`` (Flow rates,
``total``, ``rounded``), ``store.PeerStore`` (departures, retention, the cap on
departed peers, client reports trimmed after ``CLIENT_KEEP``),
``client_stats`` (a client report validated and trimmed; the rate check) and
``metrics.FindingsCounts`` (per-peer findings kept in the totals)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from diagnostics.client_stats import (
    MAX_ENTRIES,
    MIN_SPACING,
    ClientStatsError,
    check_rate,
    parse,
)
from diagnostics.metrics import FindingsCounts
from diagnostics.records import Flow, PeerRecord, rounded, total
from diagnostics.store import CLIENT_KEEP, PeerStore

# --- Flow -------------------------------------------------------------------------


def test_flow_rates():
    flow = Flow(seconds=2.0, packets=100, expected=200, lost=5, bytes=4000)
    assert flow.loss_pct == 2.5
    assert flow.bitrate_kbps == 16.0
    assert flow.packets_per_s == 50.0


def test_flow_without_time_or_expectation_has_no_rates():
    flow = Flow(packets=10, bytes=100)
    assert (flow.loss_pct, flow.bitrate_kbps, flow.packets_per_s) == (None, None, None)


def test_flow_rates_dict_is_rounded():
    flow = Flow(
        seconds=3.0, packets=100, expected=300, lost=1, bytes=1000, jitter_ms=4.06
    )
    assert flow.rates() == {
        "packets_per_s": 33.3,
        "bitrate_kbps": 2.7,
        "loss_pct": 0.33,
        "jitter_ms": 4.1,
        "rtt_ms": None,
        "delay_spread_ms": None,
        "reorder_pct": None,  # not counted on this flow
    }


def test_total_sums_counters_and_averages_gauges():
    flows = [
        Flow(1.0, 50, 50, 0, 1000, jitter_ms=2.0, rtt_ms=None),
        Flow(1.0, 40, 50, 10, 800, jitter_ms=None, rtt_ms=30.0),
        Flow(2.0, 100, 100, 0, 2000, jitter_ms=6.0, rtt_ms=10.0),
    ]
    out = total(flows)
    assert (out.seconds, out.packets, out.expected, out.lost, out.bytes) == (
        4.0,
        190,
        200,
        10,
        3800,
    )
    assert out.jitter_ms == 4.0
    assert out.rtt_ms == 20.0
    assert out.loss_pct == 5.0


def test_total_clamps_negative_loss():
    out = total([Flow(1.0, 10, 10, 2), Flow(1.0, 12, 10, -5)])
    assert out.lost == 0


def test_total_of_nothing():
    out = total([])
    assert out == Flow()
    assert out.jitter_ms is None and out.rtt_ms is None


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (None, 1, None),
        (math.nan, 1, None),
        (math.inf, 1, None),
        (-math.inf, 2, None),
        (1.26, 1, 1.3),
        (1.256, 2, 1.26),
        (3.0, 1, 3.0),
    ],
)
def test_rounded(value, digits, expected):
    assert rounded(value, digits) == expected


# --- PeerStore --------------------------------------------------------------------


def record(peer_id: str, joined_at: float = 0.0) -> PeerRecord:
    return PeerRecord(
        peer_id=peer_id,
        user_id="u-" + peer_id,
        name=peer_id.upper(),
        channel="general",
        joined_at=joined_at,
        history=10,
    )


def test_store_add_and_get():
    store = PeerStore(retention=60, max_departed=10)
    r = record("a")
    store.add(r)
    assert store.get("a") is r
    assert store.get("b") is None
    assert r.live


def test_depart_moves_the_record_and_marks_it():
    store = PeerStore(retention=60, max_departed=10)
    r = record("a")
    store.add(r)
    assert store.depart("a", "timeout", 100.0) is r
    assert "a" not in store.live
    assert store.departed["a"] is r
    assert store.get("a") is r
    assert (r.left_at, r.leave_reason, r.state, r.state_since) == (
        100.0,
        "timeout",
        "closed",
        100.0,
    )
    assert not r.live


def test_depart_unknown_peer_is_none():
    assert PeerStore(retention=60, max_departed=10).depart("x", "left", 1.0) is None


def test_all_lists_live_then_departed():
    store = PeerStore(retention=60, max_departed=10)
    for p in ("a", "b", "c"):
        store.add(record(p))
    store.depart("a", "left", 1.0)
    assert [r.peer_id for r in store.all()] == ["b", "c", "a"]


def test_departed_kept_for_retention_then_pruned():
    store = PeerStore(retention=60, max_departed=10)
    store.add(record("a"))
    store.depart("a", "left", 100.0)
    store.prune(160.0)  # exactly the retention: still kept
    assert store.get("a") is not None
    store.prune(160.5)
    assert store.get("a") is None


def test_prune_keeps_live_peers():
    store = PeerStore(retention=1, max_departed=0)
    store.add(record("a"))
    store.prune(1e9)
    assert store.get("a") is not None


def test_max_departed_evicts_the_oldest_departures():
    store = PeerStore(retention=1e9, max_departed=2)
    for p in ("a", "b", "c", "d"):
        store.add(record(p))
    # departure order, not join order, decides
    for t, p in enumerate(("c", "a", "d", "b"), start=1000):
        store.depart(p, "left", float(t))
    assert list(store.departed) == ["d", "b"]


def test_retention_prunes_only_expired_departures():
    store = PeerStore(retention=10, max_departed=10)
    for p in ("a", "b"):
        store.add(record(p))
    store.depart("a", "left", 1000.0)
    store.depart("b", "left", 1005.0)
    store.prune(1012.0)
    assert list(store.departed) == ["b"]


def reports(n: int) -> list[Any]:
    return [
        parse({"timestamp": float(i)}, received_at=float(i), max_bytes=1024)
        for i in range(n)
    ]


def test_client_reports_trimmed_after_client_keep():
    store = PeerStore(retention=1e9, max_departed=10)
    r = record("a")
    r.client.extend(reports(5))
    store.add(r)
    store.depart("a", "left", 100.0)
    store.prune(100.0 + CLIENT_KEEP)
    assert len(r.client) == 5
    store.prune(100.0 + CLIENT_KEEP + 1)
    assert [c.timestamp for c in r.client] == [4.0]


def test_client_reports_of_later_departures_are_kept_whole():
    store = PeerStore(retention=1e9, max_departed=10)
    early, late = record("a"), record("b")
    for r in (early, late):
        r.client.extend(reports(3))
        store.add(r)
    store.depart("a", "left", 1000.0)
    store.depart("b", "left", 1050.0)
    store.prune(1000.0 + CLIENT_KEEP + 10)
    assert (len(early.client), len(late.client)) == (1, 3)


# --- client_stats -----------------------------------------------------------------

DOC_REPORT = {
    "timestamp": 1764115200.0,
    "outbound": [
        {
            "source": "microphone",
            "packetsSent": 5000,
            "bytesSent": 400000,
            "audioLevel": 0.05,
            "totalAudioEnergy": 1.25,
            "totalSamplesDuration": 100.0,
            "trackMuted": False,
            "trackEnabled": True,
            "trackReadyState": "live",
        }
    ],
    "inbound": [
        {
            "peer_id": "a1b2c3d4e5f6",
            "source": "microphone",
            "packetsReceived": 5000,
            "packetsLost": 3,
            "jitter": 0.004,
            "jitterBufferDelay": 240.0,
            "jitterBufferEmittedCount": 4800000,
            "concealedSamples": 960,
            "totalSamplesReceived": 4800000,
            "totalAudioEnergy": 0.8,
            "audioLevel": 0.04,
        }
    ],
    "candidatePair": {
        "publish": {"currentRoundTripTime": 0.012},
        "subscribe": {"currentRoundTripTime": 0.011},
    },
}


def test_parse_documented_report():
    report = parse(DOC_REPORT, received_at=5.0, max_bytes=16384)
    assert (report.received_at, report.timestamp) == (5.0, 1764115200.0)
    mic = report.microphone()
    assert mic is not None
    assert mic.numbers["packetsSent"] == 5000.0
    assert mic.flags == {"trackMuted": False, "trackEnabled": True}
    assert mic.ready_state == "live"
    inbound = report.inbound_from("a1b2c3d4e5f6")
    assert inbound is not None and inbound.numbers["packetsLost"] == 3.0
    assert report.inbound_from("other") is None
    assert report.rtt == {"publish": 0.012, "subscribe": 0.011}


def test_parse_round_trips_through_as_dict():
    as_dict = parse(DOC_REPORT, received_at=5.0, max_bytes=16384).as_dict()
    assert as_dict["outbound"] == [DOC_REPORT["outbound"][0]]
    assert as_dict["inbound"] == DOC_REPORT["inbound"]
    assert as_dict["candidatePair"] == DOC_REPORT["candidatePair"]


def test_parse_empty_report():
    report = parse({}, received_at=1.0, max_bytes=100)
    assert (report.timestamp, report.outbound, report.inbound, report.rtt) == (
        None,
        (),
        (),
        {},
    )
    assert report.microphone() is None


def test_parse_drops_unknown_fields():
    raw = {
        "extra": {"x": 1},
        "outbound": [{"packetsSent": 1, "codec": "opus", "frames": -1}],
        "inbound": [{"peer_id": "p", "ssrc": 42}],
    }
    as_dict = parse(raw, received_at=1.0, max_bytes=16384).as_dict()
    assert "extra" not in as_dict
    assert as_dict["outbound"] == [
        {
            "source": "microphone",
            "packetsSent": 1.0,
            "trackMuted": None,
            "trackEnabled": None,
            "trackReadyState": None,
        }
    ]
    assert as_dict["inbound"] == [{"peer_id": "p", "source": "microphone"}]


def refusal(raw: Any, max_bytes: int = 16384) -> ClientStatsError:
    with pytest.raises(ClientStatsError) as info:
        parse(raw, received_at=1.0, max_bytes=max_bytes)
    return info.value


@pytest.mark.parametrize(
    "value",
    [-1, -0.5, math.inf, -math.inf, math.nan, True, False, "5", [1], 10**400],
    ids=repr,
)
def test_bad_number_is_refused(value):
    error = refusal({"outbound": [{"packetsSent": value}]})
    assert error.code == "bad_message"
    assert "outbound[0].packetsSent" in str(error)


def test_bad_timestamp_is_refused():
    assert "report.timestamp" in str(refusal({"timestamp": -1}))


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ([], "report must be an object"),
        ({"outbound": {}}, "outbound must be a list"),
        ({"inbound": [1]}, "every inbound entry"),
        ({"inbound": [{"source": "microphone"}]}, "inbound[0].peer_id is required"),
        ({"inbound": [{"peer_id": 5}]}, "inbound[0].peer_id must be a short string"),
        ({"inbound": [{"peer_id": "p" * 65}]}, "inbound[0].peer_id"),
        ({"outbound": [{"source": 1}]}, "outbound[0].source"),
        ({"outbound": [{"trackMuted": "yes"}]}, "outbound[0].trackMuted"),
        ({"outbound": [{"trackEnabled": 1}]}, "outbound[0].trackEnabled"),
        ({"candidatePair": []}, "candidatePair must be an object"),
        ({"candidatePair": {"publish": 1}}, "candidatePair.publish"),
        (
            {"candidatePair": {"subscribe": {"currentRoundTripTime": -2}}},
            "candidatePair.subscribe.currentRoundTripTime",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_report_is_refused(raw, where):
    error = refusal(raw)
    assert error.code == "bad_message"
    assert where in str(error)


def test_entries_up_to_max_are_accepted():
    raw = {"inbound": [{"peer_id": f"p{i}"} for i in range(MAX_ENTRIES)]}
    assert len(parse(raw, received_at=1.0, max_bytes=10**6).inbound) == MAX_ENTRIES


def test_more_than_max_entries_are_refused():
    raw = {"inbound": [{"peer_id": f"p{i}"} for i in range(MAX_ENTRIES + 1)]}
    assert f"at most {MAX_ENTRIES}" in str(refusal(raw, max_bytes=10**6))


def test_too_large_report_has_its_own_code():
    raw = {"inbound": [{"peer_id": "p" * 60} for _ in range(10)]}
    error = refusal(raw, max_bytes=100)
    assert error.code == "too_large"
    assert "the limit is 100" in str(error)


def test_report_exactly_at_the_size_limit_is_accepted():
    raw = {"timestamp": 1.0}
    assert (
        parse(raw, received_at=1.0, max_bytes=len('{"timestamp":1.0}')).timestamp == 1.0
    )


def test_null_rtt_is_skipped():
    raw = {
        "candidatePair": {"publish": None, "subscribe": {"currentRoundTripTime": None}}
    }
    assert parse(raw, received_at=1.0, max_bytes=1000).rtt == {}


def test_check_rate_first_report_is_allowed():
    check_rate(None, 0.0)


def test_check_rate_refuses_reports_too_close():
    (previous,) = reports(1)
    with pytest.raises(ClientStatsError) as info:
        check_rate(previous, previous.received_at + 0.5)
    assert info.value.code == "rate_limited"


def test_check_rate_allows_reports_min_spacing_apart():
    (previous,) = reports(1)
    check_rate(previous, previous.received_at + MIN_SPACING)


# --- FindingsCounts ---------------------------------------------------------------

LOSS = ("uplink_loss", "warning")
SILENT = ("silent_microphone", "critical")


def test_findings_put_adds_to_totals():
    counts = FindingsCounts()
    counts.put("a", Counter({LOSS: 1}))
    counts.put("b", Counter({LOSS: 1, SILENT: 1}))
    assert counts.total == Counter({LOSS: 2, SILENT: 1})


def test_findings_put_again_replaces_the_peers_counts():
    counts = FindingsCounts()
    counts.put("a", Counter({LOSS: 1}))
    counts.put("a", Counter({SILENT: 1}))
    assert counts.total == Counter({SILENT: 1})
    assert LOSS not in counts.total


def test_findings_forget_removes_the_peers_counts():
    counts = FindingsCounts()
    counts.put("a", Counter({LOSS: 1}))
    counts.put("b", Counter({LOSS: 1, SILENT: 1}))
    counts.forget("b")
    assert dict(counts.total) == {LOSS: 1}
    counts.forget("a")
    assert dict(counts.total) == {}


def test_findings_forget_unknown_peer_is_harmless():
    counts = FindingsCounts()
    counts.put("a", Counter({LOSS: 2}))
    counts.forget("zzz")
    assert dict(counts.total) == {LOSS: 2}
