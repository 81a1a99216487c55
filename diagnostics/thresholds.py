"""The numbers the diagnosis judges by, in one place, each with its reason.

Not server settings: they describe what good audio is, not how this server
runs. Tests shorten the waits with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    #: seconds of samples a finding is judged on (long enough to average noise)
    window: float = 10.0
    #: fewer expected packets than this in the window: too little to judge loss
    min_packets: int = 50
    #: loss worth naming (its severity is the direction's MOS band, quality.py)
    loss_pct: float = 1.0
    #: a jitter buffer hides about 30 ms; above, it adds delay or drops audio
    jitter_warning_ms: float = 30.0
    #: a spread of arrival delay (95th percentile) a jitter buffer must add
    delay_spread_ms: float = 40.0
    #: packets behind three or more newer ones: a low-delay buffer conceals them
    late_pct: float = 1.0
    #: ITU-T G.114: one-way delay above 150 ms (RTT 300 ms) disturbs conversation
    rtt_warning_ms: float = 300.0
    #: RFC 6464 level (dBov) at or under which a microphone counts as silent
    silent_dbov: float = -70.0
    #: at or under this it is digital silence: the capture delivers zeros
    digital_silence_dbov: float = -100.0
    #: seconds of continuous silence before a microphone counts as silent
    silence_seconds: float = 5.0
    #: seconds after joining before "publishes no audio" is said
    publish_grace: float = 5.0
    #: seconds audio must fail to arrive before it counts as one-way
    one_way_grace: float = 5.0
    #: a one-way path lost at least this share of what was sent
    one_way_loss_pct: float = 95.0
    #: seconds a peer may stay connecting before it counts as not connected
    connect_grace: float = 10.0
    #: this many drops out of "connected" within ``flap_window`` seconds is flapping
    flap_count: int = 2
    flap_window: float = 120.0
    #: concealment bands as rtcstats.com reads them: <1 % fine, 1-3 % minor,
    #: 3-5 % audible, >5 % bad
    concealment_minor_pct: float = 1.0
    concealment_audible_pct: float = 3.0
    concealment_bad_pct: float = 5.0
    #: a remote peer speaks when its level exceeds this (for "no playout")
    speaking_dbov: float = -50.0
