"""The plan of a load run: who joins which channel and publishes what, and the
run's options."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

AUDIO_RATE = 50  # packets per second of one stamped Opus stream (20 ms)
NEVER = (math.inf, math.inf)
#: pooled latency samples kept over a whole run; more are subsampled
LATENCY_SAMPLES = 200_000
#: seconds after the window's end for packets still in flight
DRAIN = 0.5
#: stamps remembered per stream to take back those past a window's end (10 s)
RECENT_STAMPS = 10 * AUDIO_RATE


class LoadError(RuntimeError):
    """The run could not be carried out (as opposed to a server out of bounds)."""


# --- the plan ---------------------------------------------------------------------


@dataclass
class Spec:
    """One synthetic participant."""

    user: str
    channel: str
    token: str
    microphone: bool
    screen: bool
    process: int


@dataclass
class LoadOptions:
    url: str
    secret: str = ""
    support_token: str = ""
    processes: int = 2
    channels: int = 1
    per_channel: int = 4
    #: audio publishers per channel (None: everyone); the rest only listen
    publishers: int | None = None
    screens: int = 0
    screen_kbps: int = 1500
    duration: float = 10.0
    warmup: float = 2.0
    ready_timeout: float | None = None
    join_timeout: float = 20.0
    join_concurrency: int = 4
    max_loss: float = 0.5
    max_p99_ms: float = 20.0
    server_pid: int | None = None
    ice_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    prefix: str = field(default_factory=lambda: "load-" + secrets.token_hex(3))

    def validate(self) -> None:
        if min(self.processes, self.channels, self.per_channel) < 1:
            raise LoadError("--processes, --channels and --per-channel must be >= 1")
        if self.publishers is not None and not 0 <= self.publishers <= self.per_channel:
            raise LoadError("--publishers must be between 0 and --per-channel")
        if not 0 <= self.screens <= self.per_channel:
            raise LoadError("--screens must be between 0 and --per-channel")
        if self.duration <= 0:
            raise LoadError("--duration must be positive")


def plan(options: LoadOptions, tokens: dict[str, str]) -> list[Spec]:
    """Participants, channel by channel; the processes in turn, each channel
    starting one further, so that every channel spans processes (whatever the
    counts) and joins interleave across channels."""
    publishers = (
        options.per_channel if options.publishers is None else options.publishers
    )
    specs = []
    for i in range(options.per_channel):
        for c in range(options.channels):
            user = f"{options.prefix}-c{c}-p{i}"
            specs.append(
                Spec(
                    user=user,
                    channel=f"{options.prefix}-c{c}",
                    token=tokens[user],
                    microphone=i < publishers,
                    screen=i < options.screens,
                    process=(i + c) % options.processes,
                )
            )
    return specs


def users(options: LoadOptions) -> list[tuple[str, str]]:
    """(user, channel) of every participant of the plan, for minting tokens."""
    return [
        (f"{options.prefix}-c{c}-p{i}", f"{options.prefix}-c{c}")
        for i in range(options.per_channel)
        for c in range(options.channels)
    ]
