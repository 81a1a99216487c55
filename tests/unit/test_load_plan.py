"""The load tool's plan and verdict, without running anything:
``miscord_client.load.scenario`` (``plan``/``users``: channels x participants,
publishers, screens, spread over processes; option validation) and
``miscord_client.load.report`` (``percentile``, ``percent``, ``fmt``, and a
small hand-built ``LoadResult`` judged against its bounds, summarised and
turned into JSON)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from miscord_client.load.report import (
    JoinRecord,
    LoadResult,
    ServerSample,
    Subscription,
    fmt,
    percent,
    percentile,
)
from miscord_client.load.scenario import LoadError, LoadOptions, plan, users


def options(**changes: object) -> LoadOptions:
    values: dict[str, object] = {"url": "http://127.0.0.1:1", "prefix": "L"}
    values.update(changes)
    return LoadOptions(**values)  # type: ignore[arg-type]


def planned(**changes: object):
    o = options(**changes)
    return plan(o, {user: f"tok:{user}" for user, _ in users(o)})


# --- users / plan -----------------------------------------------------------------


def test_users_interleave_channels():
    assert users(options(channels=2, per_channel=2)) == [
        ("L-c0-p0", "L-c0"),
        ("L-c1-p0", "L-c1"),
        ("L-c0-p1", "L-c0"),
        ("L-c1-p1", "L-c1"),
    ]


def test_plan_has_channels_times_per_channel_participants():
    specs = planned(channels=3, per_channel=4)
    assert len(specs) == 12
    assert Counter(s.channel for s in specs) == {"L-c0": 4, "L-c1": 4, "L-c2": 4}
    assert len({s.user for s in specs}) == 12


def test_plan_follows_users_order_and_tokens():
    o = options(channels=2, per_channel=3)
    specs = plan(o, {user: f"tok:{user}" for user, _ in users(o)})
    assert [(s.user, s.channel) for s in specs] == users(o)
    assert all(s.token == f"tok:{s.user}" for s in specs)


def test_plan_needs_a_token_per_user():
    with pytest.raises(KeyError):
        plan(options(per_channel=2), {"L-c0-p0": "t"})


def test_everyone_publishes_by_default():
    assert all(s.microphone for s in planned(per_channel=3))


def test_publishers_per_channel():
    specs = planned(channels=2, per_channel=4, publishers=1)
    mics = [s.user for s in specs if s.microphone]
    assert mics == ["L-c0-p0", "L-c1-p0"]


def test_no_publishers():
    assert not any(s.microphone for s in planned(per_channel=3, publishers=0))


def test_screens_per_channel():
    specs = planned(channels=2, per_channel=3, screens=2)
    sharing = sorted(s.user for s in specs if s.screen)
    assert sharing == ["L-c0-p0", "L-c0-p1", "L-c1-p0", "L-c1-p1"]


def test_participants_round_robin_over_processes():
    specs = planned(channels=1, per_channel=5, processes=2)
    assert [s.process for s in specs] == [0, 1, 0, 1, 0]


def test_processes_get_equal_shares():
    specs = planned(channels=3, per_channel=4, processes=3)
    assert Counter(s.process for s in specs) == {0: 4, 1: 4, 2: 4}


@pytest.mark.parametrize(("channels", "processes"), [(1, 2), (3, 2), (2, 3)])
def test_every_channel_spans_processes(channels, processes):
    specs = planned(channels=channels, per_channel=4, processes=processes)
    for c in range(channels):
        assert len({s.process for s in specs if s.channel == f"L-c{c}"}) > 1


def test_every_channel_spans_processes_when_channels_divide_evenly():
    specs = planned(channels=2, per_channel=4, processes=2)
    for c in range(2):
        assert len({s.process for s in specs if s.channel == f"L-c{c}"}) > 1


@pytest.mark.parametrize(
    "changes",
    [
        {"processes": 0},
        {"channels": 0},
        {"per_channel": 0},
        {"publishers": 5},
        {"publishers": -1},
        {"screens": 5},
        {"duration": 0},
    ],
    ids=lambda c: next(iter(c)),
)
def test_validate_refuses(changes):
    with pytest.raises(LoadError):
        options(**{"per_channel": 4, **changes}).validate()


def test_validate_accepts_the_edges():
    options(per_channel=4, publishers=4, screens=4).validate()
    options(per_channel=4, publishers=0, screens=0).validate()


# --- percentile / percent / fmt ---------------------------------------------------


def test_percentile_of_nothing():
    assert percentile([], 0.5) is None


@pytest.mark.parametrize(("q", "value"), [(0.0, 1), (0.5, 51), (0.99, 100), (1.0, 100)])
def test_percentile_of_a_hundred(q, value):
    values = list(range(100, 0, -1))  # unsorted on purpose
    assert percentile(values, q) == value


def test_percentile_of_one_value():
    assert percentile([7.5], 0.99) == 7.5


def sub(expected: int, received: int, **kwargs: object) -> Subscription:
    values: dict[str, object] = {
        "listener": "l",
        "publisher": "p",
        "source": "microphone",
        "expected": expected,
        "received": received,
        "arrived": received > 0,
    }
    values.update(kwargs)
    return Subscription(**values)  # type: ignore[arg-type]


def test_percent_of_lost_packets():
    assert percent([sub(100, 90), sub(300, 300)]) == 2.5


def test_percent_counts_no_negative_loss():
    assert percent([sub(100, 120), sub(100, 90)]) == 5.0


def test_percent_without_expected_packets():
    assert percent([]) is None
    assert percent([sub(0, 0)]) is None


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (None, 1, "—"),
        (1.25, 1, "1.2"),
        (1.0, 3, "1.000"),
        (12.5, 0, "12"),
        (0, 2, "0.00"),
    ],
)
def test_fmt(value, digits, shown):
    assert fmt(value, digits) == shown


def test_subscription_loss():
    assert (sub(200, 150).lost, sub(200, 150).loss) == (50, 25.0)
    assert (sub(0, 0).lost, sub(0, 0).loss) == (0, 0.0)
    assert sub(10, 12).lost == 0


# --- LoadResult -------------------------------------------------------------------


def result(
    subscriptions: list[Subscription] | None = None,
    latencies: list[float] | None = None,
    joins: list[JoinRecord] | None = None,
    **bounds: object,
) -> LoadResult:
    o = options(channels=1, per_channel=2, max_loss=1.0, max_p99_ms=10.0, **bounds)
    return LoadResult(
        options=o,
        joins=joins
        if joins is not None
        else [
            JoinRecord("L-c0-p0", "L-c0", "peer0", 12.0, 30.0),
            JoinRecord("L-c0-p1", "L-c0", "peer1", 20.0, 40.0),
        ],
        subscriptions=subscriptions
        if subscriptions is not None
        else [sub(500, 500, max_gap_ms=40.0), sub(500, 498, max_gap_ms=60.0)],
        latencies_ms=latencies if latencies is not None else [1.0, 2.0, 3.0, 4.0],
        seconds=10.0,
        server=ServerSample(cpu_percent=12.5, rss_mib=80.0, participants=2),
        clients_cpu_percent=30.0,
    )


def judged(*args: object, **kwargs: object) -> LoadResult:
    r = result(*args, **kwargs)  # type: ignore[arg-type]
    r.judge()
    return r


def test_result_within_bounds_is_ok():
    r = judged()
    assert r.ok
    assert r.failures == []
    assert (r.expected, r.received, r.loss) == (1000, 998, pytest.approx(0.2))
    assert r.worst_loss == pytest.approx(0.4)
    assert r.worst_gap_ms == 60.0


def test_received_is_capped_per_subscription():
    r = result([sub(100, 150), sub(100, 50)])
    assert (r.expected, r.received, r.loss) == (200, 150, 25.0)


def test_screen_subscriptions_are_not_audio():
    r = result([sub(100, 100), sub(1000, 0, source="screen", arrived=True)])
    assert r.expected == 100
    assert r.loss == 0.0


def test_too_much_loss_fails():
    r = judged([sub(1000, 980)])
    assert not r.ok
    assert r.failures == ["loss 2.000 % > 1.0 %"]


def test_slow_p99_fails():
    r = judged(latencies=[1.0] * 98 + [50.0, 60.0])
    assert r.failures == ["latency p99 60.0 ms > 10.0 ms"]


def test_no_latency_samples_fail():
    assert judged(latencies=[]).failures == ["latency p99 — ms > 10.0 ms"]


def test_failed_joins_fail():
    joins = [
        JoinRecord("a", "c", None, None, None, error="timeout"),
        JoinRecord("b", "c", "p", 1.0, 2.0),
    ]
    assert judged(joins=joins).failures == ["1 of 2 joins failed (first: a: timeout)"]


def test_missing_subscriptions_fail():
    subs = [sub(100, 100), sub(100, 0, listener="x", publisher="y")]
    r = judged(subs)
    assert r.failures[0] == "1 subscriptions never arrived (first: x <- y microphone)"


def test_no_audio_measured_fails_and_stops_judging():
    r = judged([], latencies=[])
    assert r.failures == ["no audio subscription was measured"]


def test_summary_of_a_pass():
    text = judged().summary()
    lines = text.splitlines()
    assert lines[0].startswith("miscord-sfu loadtest: 1 channel(s) × 2 (2 publishing")
    assert "loss ≤ 1.0 %, latency p99 ≤ 10.0 ms" in lines[0]
    assert any(
        line.split() == ["participants", "joined", "2", "/", "2"] for line in lines
    )
    assert lines[-1].split()[-1] == "PASS"
    assert "screen subscriptions" not in text


def test_summary_of_a_failure_lists_the_reasons():
    text = judged([sub(1000, 900)]).summary()
    assert text.splitlines()[-1].endswith("FAIL: loss 10.000 % > 1.0 %")


def test_summary_shows_screens_when_there_are_some():
    subs = [sub(100, 100), sub(100, 90, source="screen", kbps=1400.0)]
    text = judged(subs).summary()
    assert "screen subscriptions" in text
    assert "10.000 (10.00)" in text
    assert "1400" in text


def test_to_json():
    data = judged().to_json()
    json.dumps(data)  # serialisable
    assert data["ok"] is True
    assert data["failures"] == []
    assert (data["participants"], data["joined"]) == (2, 2)
    assert data["join_ms"] == {"p50": 20.0, "p99": 20.0}
    assert data["publish_ms"] == {"p50": 40.0, "p99": 40.0}
    assert (data["expected"], data["received"]) == (1000, 998)
    assert data["latency_ms"] == {"p50": 3.0, "p99": 4.0, "max": 4.0}
    assert data["server"]["cpu_percent"] == 12.5
    assert data["server"]["fanout_p99_ms"] is None
    assert data["clients_cpu_percent"] == 30.0
