"""What one UDP `send` on loopback costs the sender, by whether the receiving
process sleeps. The kernel delivers a loopback datagram in the sender's system
call, waking the receiver if it waits in epoll; the voice-room benchmark's
server CPU therefore includes its clients' wake-ups, which a real network
would not put on the server.

A child process drains R sockets in an epoll loop; this process sends one
datagram to each of them, then pauses (the receiver falls asleep) or not.

    scripts/bench udp_wakeup
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import selectors
import socket
import time
from dataclasses import dataclass

from benchmarks.common import fmt, machine, publish

PAYLOAD = b"x" * 120  # about an Opus packet with SRTP


def drain(sockets: list[socket.socket]) -> None:
    selector = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select(1):
            try:
                while True:
                    key.fileobj.recv(2048)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


@dataclass
class Case:
    receivers: int
    pause_ms: float
    wall_us: float | None  # per send, measured around the sends alone
    cpu_us: float  # per round, the process's CPU including the pause's wake-up


def run_case(receivers: int, pause_ms: float, packets: int) -> Case:
    sinks = []
    for _ in range(receivers):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        sinks.append(s)
    child = multiprocessing.get_context("fork").Process(target=drain, args=(sinks,))
    child.start()
    senders = []
    for sink in sinks:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(sink.getsockname())
        senders.append(s)
    try:
        time.sleep(0.3)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        rounds = packets // max(receivers, 1)
        wall = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            for s in senders:
                s.send(PAYLOAD)
            wall += time.perf_counter() - started
            if pause_ms:
                time.sleep(pause_ms / 1000)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
    finally:
        child.kill()
        child.join()
        for s in senders + sinks:
            s.close()
    sent = rounds * receivers
    return Case(
        receivers, pause_ms, 1e6 * wall / sent if sent else None, 1e6 * cpu / rounds
    )


def main(args: argparse.Namespace) -> None:
    cases = [
        run_case(receivers, pause, args.packets)
        for receivers, pause in ((0, 5.0), (1, 5.0), (3, 5.0), (15, 5.0), (15, 0.0))
    ]
    rows = "\n".join(
        f"| {c.receivers} | {fmt(c.pause_ms, 0)} | {fmt(c.wall_us)} | "
        f"{fmt(c.cpu_us)} | {fmt(c.cpu_us / c.receivers if c.receivers else None)} |"
        for c in cases
    )
    body = (
        "## Loopback UDP send and the receiver's wake-up (`benchmarks/udp_wakeup.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench udp_wakeup`.\n\n"
        "One process sends a 120-byte datagram to each of R sockets drained by one "
        "other process, then pauses (the receiver goes back to sleep) or not. On "
        "loopback the sender's `send` runs the receiving side of the stack and wakes "
        "a sleeping receiver, so its cost depends on the receiver: this is why the "
        "voice-room server's µs per packet grows when few packets go to each client "
        "process per wake-up. The first row sends nothing: what one wake-up of a "
        "sleeping Python process costs by itself.\n\n"
        "| receivers R | pause between rounds ms | wall µs per send | "
        "sender CPU µs per round | per send |\n|---|---|---|---|---|\n" + rows + "\n"
    )
    publish(args, "udp_wakeup", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=6000)
    parser.add_argument("--no-write", dest="write", action="store_false")
    main(parser.parse_args())
