"""The findings: what is wrong, on which side, since when, the evidence, what to do.

Each rule reads a ``Context`` and returns findings. ``uplink`` is from the
user to the server, ``downlink`` from the server to the user. Severity
``critical`` means the user cannot be heard or cannot hear (verdict
``broken``); ``warning`` means degraded audio; ``info`` is context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .client_stats import ClientInbound, ClientReport
from .context import Context, interval_of, recent, rolling, run_since
from .records import Flow, PeerRecord, Sample, SubFlow, rounded

INFO, WARNING, CRITICAL = "info", "warning", "critical"
UPLINK, DOWNLINK, BOTH = "uplink", "downlink", "both"
BROKEN_STATES = ("failed", "disconnected")
#: seconds of rolling loss/jitter values used to date a finding
SINCE_SPAN = 2.0
#: seconds after an unmute before the client's track state must agree with it
UNMUTE_SETTLE = 1.0


@dataclass
class Finding:
    code: str
    severity: str
    side: str
    since: float
    summary: str
    evidence: dict[str, Any]
    advice: str
    remote_peer: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "code": self.code,
            "severity": self.severity,
            "side": self.side,
            "since": round(self.since, 3),
            "summary": self.summary,
            "evidence": self.evidence,
            "advice": self.advice,
        }
        if self.remote_peer is not None:
            out["remote_peer"] = self.remote_peer
        return out


Rule = Callable[[Context], list[Finding]]


def _name(ctx: Context, peer_id: str) -> str:
    other = ctx.other(peer_id)
    return f"{other.name} ({peer_id})" if other else peer_id


def _last(record: PeerRecord, event: str, **match: Any) -> float | None:
    return next(
        (
            e.t
            for e in reversed(record.timeline)
            if e.event == event and all(e.detail.get(k) == v for k, v in match.items())
        ),
        None,
    )


def _transport_states(record: PeerRecord) -> dict[str, str]:
    """The last ICE / DTLS / connection state of each connection before any
    teardown closed it."""
    states: dict[str, str] = {}
    for e in record.timeline:
        if e.event in ("ice", "dtls", "connection") and e.detail["state"] != "closed":
            states[f"{e.detail.get('pc')}.{e.event}"] = e.detail["state"]
    return states


def _last_state(record: PeerRecord) -> str:
    """The lifecycle state before the peer was closed."""
    return next(
        (
            e.detail["state"]
            for e in reversed(record.timeline)
            if e.event == "state" and e.detail["state"] != "closed"
        ),
        record.state,
    )


# --- connectivity -------------------------------------------------------------------


def not_connected(ctx: Context) -> list[Finding]:
    record, th = ctx.record, ctx.thresholds
    states = _transport_states(record)
    ice_failed = any(k.endswith(".ice") and v == "failed" for k, v in states.items())
    if record.live:
        stuck = record.state in ("joining", "connecting") and (
            ctx.now - record.state_since > th.connect_grace
        )
        if record.state not in BROKEN_STATES and not stuck and not ice_failed:
            return []
        since = record.state_since
        summary = f"the media connection is {record.state}"
    else:
        if record.leave_reason not in ("timeout", "error"):
            return []
        drops = [
            e.t
            for e in record.timeline
            if e.event == "state" and e.detail.get("state") in BROKEN_STATES
        ]
        since = drops[-1] if drops else record.left_at or ctx.now
        summary = (
            "the media connection broke and the peer was removed "
            f"({record.leave_reason})"
        )
    if ice_failed:
        summary += "; ICE failed"
    return [
        Finding(
            "not_connected",
            CRITICAL,
            BOTH,
            since,
            summary,
            {
                "state": _last_state(record),
                "leave_reason": record.leave_reason,
                "transport": states,
                "ice_failed": ice_failed,
            },
            "No media flows between the user and the server. Check that UDP to the "
            "server's ICE addresses is allowed (firewall, VPN, corporate proxy), "
            "then ask the user to rejoin.",
        )
    ]


def connection_flapping(ctx: Context) -> list[Finding]:
    th = ctx.thresholds
    drops = [
        e
        for e in ctx.record.timeline
        if e.event == "state"
        and e.detail.get("previous") == "connected"
        and e.detail.get("state") in BROKEN_STATES
        and ctx.now - th.flap_window < e.t <= ctx.now
    ]
    if len(drops) < th.flap_count:
        return []
    return [
        Finding(
            "connection_flapping",
            WARNING,
            BOTH,
            drops[0].t,
            f"the media connection dropped {len(drops)} times in the last "
            f"{th.flap_window:.0f} s",
            {
                "drops": len(drops),
                "threshold": th.flap_count,
                "window_s": th.flap_window,
                "at": [round(e.t, 3) for e in drops],
            },
            "The user's network is unstable (Wi-Fi roaming, a saturated link, a "
            "mobile connection): suggest a wired connection or a closer access point.",
        )
    ]


def alone_in_channel(ctx: Context) -> list[Finding]:
    if ctx.alone_since is None:
        return []
    return [
        Finding(
            "alone_in_channel",
            INFO,
            BOTH,
            ctx.alone_since,
            "nobody else is in the channel, so there is nobody to hear or be heard by",
            {"channel": ctx.record.channel, "participants": 1},
            "Nothing is broken: the others are in another channel or have not joined.",
        )
    ]


# --- the microphone -----------------------------------------------------------------


def muted(ctx: Context) -> list[Finding]:
    record = ctx.record
    if not record.mic_muted:
        return []
    return [
        Finding(
            "muted",
            INFO,
            UPLINK,
            record.mic_muted_since,
            "the user is muted in the app: nobody hears them",
            {"source": "microphone", "muted": True},
            "Ask the user to unmute (the microphone button).",
        )
    ]


def no_audio_published(ctx: Context) -> list[Finding]:
    record, th = ctx.record, ctx.thresholds
    if record.mic_published_at is None:
        if not ctx.present_for(th.publish_grace):
            return []
        since = _last(record, "unpublished", source="microphone") or record.joined_at
        return [
            Finding(
                "no_audio_published",
                CRITICAL,
                UPLINK,
                since,
                "the user sends no microphone: nobody can hear them",
                {
                    "microphone_published": False,
                    "seconds": round(ctx.now - since, 1),
                    "grace_s": th.publish_grace,
                },
                "The browser has no microphone permission or no input device, or "
                "the app failed to capture it: check the site's microphone "
                "permission and the selected input device, then rejoin.",
            )
        ]
    arrived = ctx.uplink is not None and ctx.uplink.expected > 0
    if (
        arrived
        or record.mic_muted
        or ctx.now - record.mic_published_at < th.publish_grace
    ):
        return []
    return [
        Finding(
            "no_audio_published",
            CRITICAL,
            UPLINK,
            record.mic_published_at,
            "the microphone is published but no audio packet arrives",
            {"microphone_published": True, "packets": 0, "window_s": th.window},
            "The user's browser negotiated audio but sends nothing: a blocked UDP "
            "path or a stalled capture. Ask the user to rejoin.",
        )
    ]


def silent_microphone(ctx: Context) -> list[Finding]:
    record, th = ctx.record, ctx.thresholds
    if record.mic_muted is not False or ctx.uplink is None or not ctx.uplink.expected:
        return []
    unmuted_at = record.mic_muted_since
    levels = [p for p in ctx.levels_of(record, th.window * 3) if p.t >= unmuted_at]
    if not levels or ctx.now - levels[-1].t > 3.0:
        return []
    run = []
    for point in reversed(levels):
        if point.max_dbov > th.silent_dbov:
            break
        run.append(point)
    if not run or run[0].t - run[-1].t + 1.0 < th.silence_seconds:
        return []
    loudest = max(p.max_dbov for p in run)
    digital = loudest <= th.digital_silence_dbov
    return [
        Finding(
            "silent_microphone",
            # room noise behind noise suppression is someone not talking:
            # only digital silence is a fault (contract 1.1)
            CRITICAL if digital else INFO,
            UPLINK,
            run[-1].t - 1.0,
            "audio packets arrive but the microphone captures "
            + ("digital silence" if digital else "almost nothing"),
            {
                "max_dbov": loudest,
                "threshold_dbov": th.silent_dbov,
                "seconds": round(run[0].t - run[-1].t + 1.0, 1),
                "packets_per_s": rounded(ctx.uplink.packets_per_s),
            },
            "The wrong input device is selected, its volume is at zero, or another "
            "application holds the microphone: check the system's input settings.",
        )
    ]


# --- network quality ----------------------------------------------------------------


def _loss_finding(
    ctx: Context,
    code: str,
    side: str,
    flow: Flow,
    pick: Callable[[Sample], Flow | None],
    summary: str,
    advice: str,
    extra: dict[str, Any] | None = None,
    remote_peer: str | None = None,
) -> list[Finding]:
    th = ctx.thresholds
    loss = flow.loss_pct
    if flow.expected < th.min_packets or loss is None or loss < th.loss_pct:
        return []
    span = max(SINCE_SPAN, 2 * interval_of(ctx.window))
    points = [
        (t, f is not None and (f.loss_pct or 0.0) >= th.loss_pct)
        for t, f in rolling(ctx.window, span, pick)
    ]
    return [
        Finding(
            code,
            ctx.quality[side].band,
            side,
            run_since(points, span) or ctx.window[0].t,
            summary.format(loss=loss),
            {
                "loss_pct": round(loss, 2),
                "threshold_pct": th.loss_pct,
                "lost": flow.lost,
                "expected": flow.expected,
                "burst_ratio": round(flow.burst_ratio, 2),
                "mos": ctx.quality[side].mos,
                "window_s": th.window,
                **(extra or {}),
            },
            advice,
            remote_peer,
        )
    ]


def uplink_loss(ctx: Context) -> list[Finding]:
    if ctx.uplink is None:
        return []
    return _loss_finding(
        ctx,
        "uplink_loss",
        UPLINK,
        ctx.uplink,
        lambda s: s.uplink,
        "{loss:.1f} % of this user's audio packets are lost on the way to the server",
        "The user's upload is lossy (Wi-Fi, a saturated uplink, a VPN): suggest a "
        "wired connection and pausing uploads; everyone hears this user choppy.",
    )


def downlink_loss(ctx: Context) -> list[Finding]:
    by_publisher: dict[str, list[SubFlow]] = {}
    for sample in ctx.window:
        for sub in sample.subs:
            by_publisher.setdefault(sub.publisher, []).append(sub)
    per_peer = {
        peer: 100.0 * max(0, sum(s.lost_here for s in subs)) / expected
        for peer, subs in by_publisher.items()
        if (expected := sum(s.expected for s in subs)) > 0
    }
    th = ctx.thresholds
    lossy = [p for p, pct in per_peer.items() if pct >= th.loss_pct]
    return _loss_finding(
        ctx,
        "downlink_loss",
        DOWNLINK,
        ctx.downlink,
        lambda s: s.downlink,
        "{loss:.1f} % of the audio the server sends this user is lost on the way",
        "The user's download is lossy (Wi-Fi, a saturated link, a VPN): suggest a "
        "wired connection and pausing downloads or streams; this user hears the "
        "others choppy.",
        {"loss_pct_by_peer": {p: round(v, 2) for p, v in per_peer.items()}},
        lossy[0] if len(lossy) == 1 and len(per_peer) > 1 else None,
    )


def high_jitter(ctx: Context) -> list[Finding]:
    th = ctx.thresholds
    found = []
    for side, flow, pick, whose in (
        (
            UPLINK,
            ctx.uplink,
            lambda s: s.uplink,
            "this user's audio reaching the server",
        ),
        (DOWNLINK, ctx.downlink, lambda s: s.downlink, "the audio reaching this user"),
    ):
        jitter = flow.jitter_ms if flow is not None else None
        if jitter is None or jitter < th.jitter_warning_ms:
            continue
        span = max(SINCE_SPAN, 2 * interval_of(ctx.window))
        points = [
            (t, f is not None and (f.jitter_ms or 0.0) >= th.jitter_warning_ms)
            for t, f in rolling(ctx.window, span, pick)
        ]
        found.append(
            Finding(
                "high_jitter",
                ctx.quality[side].band,
                side,
                run_since(points, span) or ctx.window[0].t,
                f"{whose} arrives unevenly: jitter {jitter:.0f} ms",
                {
                    "jitter_ms": round(jitter, 1),
                    "threshold_ms": th.jitter_warning_ms,
                    "mos": ctx.quality[side].mos,
                    "window_s": th.window,
                },
                "Packets are delayed unevenly (a busy Wi-Fi, bufferbloat from "
                "uploads or downloads): the jitter buffer adds delay or drops "
                "audio. Suggest a wired connection and pausing other traffic.",
            )
        )
    return found


def high_rtt(ctx: Context) -> list[Finding]:
    """Each connection's own round trip (its consent checks, the receiver
    reports, or the client's candidate pair): a slow route may be one way."""
    th = ctx.thresholds
    found = []
    for side, flow, pick in (
        (UPLINK, ctx.uplink, lambda s: s.uplink),
        (DOWNLINK, ctx.downlink, lambda s: s.downlink),
    ):
        rtt = flow.rtt_ms if flow is not None else None
        if rtt is None or rtt < th.rtt_warning_ms:
            continue
        measured = [
            (t, f.rtt_ms >= th.rtt_warning_ms)
            for t, f in ((s.t, pick(s)) for s in ctx.window)
            if f is not None and f.rtt_ms is not None
        ]
        connection = "publish" if side == UPLINK else "subscribe"
        found.append(
            Finding(
                "high_rtt",
                ctx.quality[side].band,
                side,
                run_since(measured, SINCE_SPAN) or ctx.now,
                f"the round trip of the {connection} connection takes {rtt:.0f} ms: "
                "conversation lags",
                {
                    "rtt_ms": round(rtt, 1),
                    "threshold_ms": th.rtt_warning_ms,
                    "mos": ctx.quality[side].mos,
                },
                "The user is far from the server or behind a slow route (VPN, "
                "satellite, mobile): connect to a closer server or without the VPN.",
            )
        )
    return found


def delay_variation(ctx: Context) -> list[Finding]:
    """What RFC 3550 jitter misses: packets out of order and late, and the
    spread of their delay, which listeners' jitter buffers must absorb (by
    adding delay) or conceal. The uplink's is measured by the server; the
    downlink's is the listener's own report (the Python client sends it)."""
    th, found = ctx.thresholds, []
    for side, flow, pick, whose, advice in (
        (
            UPLINK,
            ctx.uplink,
            lambda s: s.uplink,
            "this user's audio reaches the server",
            "The user's upload is congested (a busy Wi-Fi, other uploads, "
            "bufferbloat): listeners' jitter buffers add delay or drop late audio, "
            "so everyone hears this user late or choppy. Suggest a wired "
            "connection and pausing uploads.",
        ),
        (
            DOWNLINK,
            ctx.downlink,
            None,
            "the audio reaches this user",
            "The user's download is congested (a busy Wi-Fi, other downloads or "
            "streams): their jitter buffer adds delay or drops late audio, so "
            "they hear everyone late or choppy. Suggest a wired connection.",
        ),
    ):
        if flow is None:
            continue
        spread, late = flow.delay_spread_ms or 0.0, flow.late_pct or 0.0
        if spread < th.delay_spread_ms and late < th.late_pct:
            continue
        since = ctx.window[0].t if ctx.window else ctx.now
        if pick is not None:
            span = max(SINCE_SPAN, 2 * interval_of(ctx.window))
            points = [
                (
                    t,
                    f is not None
                    and (
                        (f.delay_spread_ms or 0.0) >= th.delay_spread_ms
                        or (f.late_pct or 0.0) >= th.late_pct
                    ),
                )
                for t, f in rolling(ctx.window, span, pick)
            ]
            since = run_since(points, span) or since
        found.append(
            Finding(
                "delay_variation",
                ctx.quality[side].band,
                side,
                since,
                f"{whose} unevenly: its delay varies by {spread:.0f} ms"
                + (f", {late:.1f} % of packets late" if pick is not None else ""),
                {
                    "delay_spread_ms": round(spread, 1),
                    "threshold_ms": th.delay_spread_ms,
                    "reorder_pct": rounded(flow.reorder_pct, 2),
                    "late_pct": rounded(flow.late_pct, 2),
                    "late_threshold_pct": th.late_pct,
                    "jitter_ms": rounded(flow.jitter_ms),
                    "mos": ctx.quality[side].mos,
                    "measured_by": "server" if pick is not None else "client",
                    "window_s": th.window,
                },
                advice,
            )
        )
    return found


#: the findings whose severity is their direction's MOS band (quality.py)
NETWORK = (
    "uplink_loss",
    "downlink_loss",
    "high_jitter",
    "high_rtt",
    "delay_variation",
    "network_quality",
)


def network_quality(ctx: Context, found: list[Finding]) -> list[Finding]:
    """A direction whose MOS is below 4.0 with no network finding of its own
    (several small impairments add up) still says so: the MOS and the
    findings never disagree."""
    out = []
    for side, quality in ctx.quality.items():
        if quality.band == INFO or any(
            f.code in NETWORK and f.side == side for f in found
        ):
            continue
        out.append(
            Finding(
                "network_quality",
                quality.band,
                side,
                ctx.window[0].t if ctx.window else ctx.now,
                f"the {side} is mediocre (MOS {quality.mos:.1f}): small impairments "
                "add up",
                quality.as_dict(),
                "No single cause stands out: loss, delay and its variation together "
                "lower the quality. Suggest a wired connection.",
            )
        )
    return out


# --- one-way audio ------------------------------------------------------------------


def _client_received(
    ctx: Context, subscriber: PeerRecord, publisher: str, seconds: float
) -> float | None:
    """Packets of ``publisher`` the subscriber's client says it received within
    the last ``seconds`` (None: its reports do not tell)."""
    reports = recent(
        subscriber.client, ctx.now - seconds, ctx.now, lambda r: r.received_at
    )
    entries = [e for r in reports if (e := r.inbound_from(publisher)) is not None]
    if len(entries) < 2:
        return None
    return _delta(entries[-1], entries[0], "packetsReceived")


def _dead(subs: list[SubFlow], received: float | None, loss_pct: float) -> str | None:
    """Why a stream was not received, or None if it was (or nothing tells)."""
    if sum(s.sent for s in subs) <= 0:
        return "nothing sent"
    if received is not None and received <= 0:
        return "the client received none of it"
    if not any(s.confirmed for s in subs):
        return "no receiver report"
    expected = sum(s.expected for s in subs)
    lost = sum(s.lost for s in subs)
    if expected > 0 and 100.0 * lost / expected >= loss_pct:
        return f"{100.0 * lost / expected:.0f} % lost"
    return None


def _reaches(
    ctx: Context, subscriber: PeerRecord, publisher: str, seconds: float
) -> str | None:
    return _dead(
        ctx.subs_from(subscriber, publisher, seconds),
        _client_received(ctx, subscriber, publisher, seconds),
        ctx.thresholds.one_way_loss_pct,
    )


def one_way_audio(ctx: Context) -> list[Finding]:
    th = ctx.thresholds
    grace = th.one_way_grace
    record = ctx.record
    if not record.live or not ctx.present_for(grace):
        return []
    found = []
    arrived = sum(s.uplink.expected for s in ctx.samples_of(record, grace) if s.uplink)
    listeners = [o for o in ctx.others if o.live and ctx.now - o.joined_at >= grace]
    if _speaks(ctx, record) and listeners:
        why = {o.peer_id: _reaches(ctx, o, record.peer_id, grace) for o in listeners}
        if all(why.values()):
            found.append(
                Finding(
                    "one_way_audio",
                    CRITICAL,
                    UPLINK,
                    ctx.now - grace,
                    "this user's audio reaches the server but nobody receives it",
                    {"packets_arrived": arrived, "listeners": why},
                    "The others' downlinks do not carry this user's audio: open "
                    "their reports; if all fail the same way, the server's "
                    "forwarding is at fault.",
                    next(iter(why)) if len(why) == 1 else None,
                )
            )
    speakers = [o for o in ctx.others if _speaks(ctx, o)]
    if speakers:
        why_not = {o.peer_id: _reaches(ctx, record, o.peer_id, grace) for o in speakers}
        if all(why_not.values()):
            found.append(
                Finding(
                    "one_way_audio",
                    CRITICAL,
                    DOWNLINK,
                    ctx.now - grace,
                    "the others speak but none of their audio reaches this user",
                    {"speakers": why_not},
                    "The user's download path carries no audio although the server "
                    "sends it (a firewall passing only outgoing UDP, a broken "
                    "subscribe connection): ask the user to rejoin, check UDP.",
                    next(iter(why_not)) if len(why_not) == 1 else None,
                )
            )
    return found


def _speaks(ctx: Context, record: PeerRecord) -> bool:
    """Unmuted, published for the whole grace period, and its packets arrive."""
    grace = ctx.thresholds.one_way_grace
    published = record.mic_published_at
    if record.mic_muted is not False or published is None:
        return False
    arrived = sum(s.uplink.expected for s in ctx.samples_of(record, grace) if s.uplink)
    return ctx.now - published >= grace and arrived >= ctx.thresholds.min_packets


# --- from the client's own stats ----------------------------------------------------


def _inbound_pairs(
    reports: list[ClientReport],
) -> dict[str, tuple[ClientInbound | None, ClientInbound]]:
    """Per remote microphone: its first entry in the window (None if it has only
    one) and its latest."""
    first: dict[str, ClientInbound] = {}
    last: dict[str, ClientInbound] = {}
    for report in reports:
        for entry in report.inbound:
            if entry.source == "microphone":
                first.setdefault(entry.peer_id, entry)
                last[entry.peer_id] = entry
    return {
        peer: (first[peer] if first[peer] is not entry else None, entry)
        for peer, entry in last.items()
    }


def _delta(new: ClientInbound, old: ClientInbound | None, name: str) -> float | None:
    value = new.numbers.get(name)
    if value is None:
        return None
    if old is None:
        return value
    before = old.numbers.get(name)
    return value - before if before is not None else None


def robotic_audio(ctx: Context) -> list[Finding]:
    th = ctx.thresholds
    found = []
    for peer, (old, new) in _inbound_pairs(ctx.client).items():
        concealed = _delta(new, old, "concealedSamples")
        samples = _delta(new, old, "totalSamplesReceived")
        if concealed is None or not samples or samples < 48000:
            continue
        pct = 100.0 * concealed / samples
        if pct < th.concealment_minor_pct:
            continue
        band = (
            "bad"
            if pct > th.concealment_bad_pct
            else "audible"
            if pct >= th.concealment_audible_pct
            else "minor"
        )
        remote = ctx.other(peer)
        remote_loss = None
        if remote is not None:
            uplinks = [s.uplink for s in ctx.samples_of(remote, th.window) if s.uplink]
            expected = sum(f.expected for f in uplinks)
            remote_loss = (
                100.0 * sum(f.lost for f in uplinks) / expected if expected else None
            )
        theirs = remote_loss is not None and remote_loss >= th.loss_pct
        found.append(
            Finding(
                "robotic_audio",
                INFO if band == "minor" else WARNING,
                DOWNLINK,
                ctx.client[0].received_at,
                f"{pct:.1f} % of the audio from {_name(ctx, peer)} is concealed "
                f"({band}): it sounds robotic to this user",
                {
                    "concealment_pct": round(pct, 2),
                    "band": band,
                    "bands_pct": {
                        "minor": th.concealment_minor_pct,
                        "audible": th.concealment_audible_pct,
                        "bad": th.concealment_bad_pct,
                    },
                    "concealed_samples": concealed,
                    "samples": samples,
                    "remote_uplink_loss_pct": rounded(remote_loss, 2),
                },
                (
                    "The remote peer's own upload loses packets: fix that side first "
                    "(open their report)."
                    if theirs
                    else "The server's counters are clean, so the gaps appear on this "
                    "user's download or in their device (CPU overload, Bluetooth "
                    "headset): suggest a wired connection and closing heavy apps."
                ),
                peer,
            )
        )
    return found


def no_playout(ctx: Context) -> list[Finding]:
    th = ctx.thresholds
    found = []
    for peer, (old, new) in _inbound_pairs(ctx.client).items():
        if old is None:
            continue
        packets = _delta(new, old, "packetsReceived")
        samples = _delta(new, old, "totalSamplesReceived")
        energy = _delta(new, old, "totalAudioEnergy")
        if not packets or packets <= 0:
            continue
        remote = ctx.other(peer)
        speaking = (
            remote is not None
            and remote.mic_muted is False
            and any(
                p.max_dbov > th.speaking_dbov for p in ctx.levels_of(remote, th.window)
            )
        )
        if samples == 0:
            reason = "no samples are played out"
        elif energy == 0 and speaking:
            reason = "the played audio has no energy although the remote peer speaks"
        else:
            continue
        found.append(
            Finding(
                "no_playout",
                CRITICAL,
                DOWNLINK,
                ctx.client[0].received_at,
                f"audio packets from {_name(ctx, peer)} arrive but {reason}",
                {
                    "packets_received": packets,
                    "samples_played": samples,
                    "audio_energy": energy,
                    "remote_speaking": speaking,
                },
                "The browser receives the audio but does not play it: the page's "
                "audio is muted or blocked by autoplay, or the output device is "
                "wrong or muted. Check the output device and click in the page.",
                peer,
            )
        )
    return found


def mic_muted_by_os(ctx: Context) -> list[Finding]:
    record = ctx.record
    if record.mic_muted is not False or not ctx.client:
        return []
    # a report collected just before an unmute may arrive just after it
    unmuted = record.mic_muted_since + UNMUTE_SETTLE
    run = []
    for report in reversed(ctx.client):
        mic = report.microphone()
        if mic is None or report.received_at <= unmuted:
            break
        off = (
            mic.flags.get("trackMuted") is True
            or mic.flags.get("trackEnabled") is False
            or mic.ready_state == "ended"
        )
        if not off:
            break
        run.append((report, mic))
    if not run:
        return []
    _, mic = run[0]
    return [
        Finding(
            "mic_muted_by_os",
            CRITICAL,
            UPLINK,
            run[-1][0].received_at,
            "the user is not muted in the app, but the browser or the operating "
            "system delivers no microphone audio",
            {
                "trackMuted": mic.flags.get("trackMuted"),
                "trackEnabled": mic.flags.get("trackEnabled"),
                "trackReadyState": mic.ready_state,
                "app_muted": False,
            },
            "A hardware mute switch, the OS privacy settings or another app took "
            "the microphone (track muted or ended): unmute it there, or pick "
            "another input device and rejoin.",
        )
    ]


def lifecycle(ctx: Context) -> list[Finding]:
    """What support needs to know of the peer's life, none of it a fault: it
    left (a broken end is ``not_connected``), it resumed after a lost socket,
    its media goes through a TURN relay."""
    record, found = ctx.record, []
    if not record.live and record.leave_reason not in ("timeout", "error"):
        found.append(
            Finding(
                "left",
                INFO,
                BOTH,
                record.left_at or ctx.now,
                f"the peer left the call ({record.leave_reason})",
                {"leave_reason": record.leave_reason, "left_at": record.left_at},
                "Nothing to fix: the figures are those of its last connected seconds.",
            )
        )
    resumes = [e for e in record.timeline if e.event == "resumed"]
    if resumes:
        found.append(
            Finding(
                "resumed",
                INFO,
                BOTH,
                resumes[-1].t,
                f"the peer's connection dropped and was resumed {len(resumes)} "
                "time(s): the others did not see it leave",
                {
                    "resumes": len(resumes),
                    "media": [e.detail.get("media") for e in resumes[-5:]],
                },
                "Brief drops are the user's network (Wi-Fi roaming, a network change); "
                "frequent ones: suggest a steadier connection.",
            )
        )
    relayed = sorted(
        {
            str(item.get("pc"))
            for item in record.latest
            if item.get("type") == "candidate-pair"
            and str(item.get("remoteCandidate", "")).endswith(" relay")
        }
    )
    if relayed:
        found.append(
            Finding(
                "relayed",
                INFO,
                BOTH,
                record.joined_at,
                "the peer's media goes through a TURN relay ("
                + ", ".join(relayed)
                + ")",
                {"connections": relayed},
                "Nothing to fix: the user's network allows no direct UDP path. A "
                "relay adds a little delay.",
            )
        )
    return found


RULES: tuple[Rule, ...] = (
    not_connected,
    lifecycle,
    no_audio_published,
    mic_muted_by_os,
    muted,
    silent_microphone,
    one_way_audio,
    uplink_loss,
    downlink_loss,
    high_jitter,
    high_rtt,
    delay_variation,
    connection_flapping,
    robotic_audio,
    no_playout,
    alone_in_channel,
)

SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, INFO: 2}


def evaluate(ctx: Context) -> list[Finding]:
    """Every rule's findings, the most severe first; a cause hides its symptoms."""
    found = [f for rule in RULES for f in rule(ctx)]
    codes = {f.code for f in found}
    hidden: set[str] = set()
    if "not_connected" in codes:
        # nothing flows, so every other measure only repeats it
        hidden |= codes - {
            "not_connected",
            "connection_flapping",
            "muted",
            "left",
            "resumed",
            "relayed",
        }
    found = [f for f in found if f.code not in hidden]
    if "not_connected" not in codes:
        found += network_quality(ctx, found)
    found.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return found
