"""A real coturn (Debian's ``turnserver``) on 127.0.0.1 for tests, with the
REST scheme's shared secret (``use-auth-secret``) and a small relay range."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aioice.stun

TURN_SECRET = "turn-secret-for-tests-only-0123456789abcdef"


def listening_port() -> int:
    """A port for coturn's UDP and TCP listeners, below Linux's ephemeral
    ports (32768+): one taken from the ephemeral range was, once, a client
    connection's by the time coturn bound it (errno 98)."""
    while True:
        port = random.randrange(10000, 20000)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port


def spare_ports(size: int) -> tuple[int, int]:
    """Ports below Linux's ephemeral ones (32768+), where nothing else binds."""
    low = random.randrange(20000, 30000 - size)
    return low, low + size - 1


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Coturn:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    secret: str = TURN_SECRET

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)


def start_coturn(directory: Path, relay_ports: tuple[int, int]) -> Coturn:
    """coturn listening on a free port of 127.0.0.1, relaying from
    ``relay_ports`` on 127.0.0.1 (``allow-loopback-peers``: it relays to the
    server at 127.0.0.1), ready when it answers a STUN binding request."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError(
            "coturn is not installed (apt-get install coturn; scripts/test does)"
        )
    port = listening_port()
    log = directory / "turn.log"
    config = directory / "turn.conf"
    config.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                f"listening-port={port}",
                "relay-ip=127.0.0.1",
                f"min-port={relay_ports[0]}",
                f"max-port={relay_ports[1]}",
                "use-auth-secret",
                f"static-auth-secret={TURN_SECRET}",
                "realm=miscord.test",
                "allow-loopback-peers",
                "no-tls",
                "no-dtls",
                "no-cli",
                "fingerprint",
                f"log-file={log}",
                "simple-log",
                "verbose",
                f"pidfile={directory / 'turn.pid'}",
                f"userdb={directory / 'turndb'}",
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    coturn = Coturn(port, log, proc)
    request = bytes(
        aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING,
            message_class=aioice.stun.Class.REQUEST,
        )
    )
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while True:
            probe.sendto(request, ("127.0.0.1", port))
            try:
                probe.recvfrom(2048)
                return coturn
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    coturn.stop()
                    raise RuntimeError(
                        f"coturn did not start: {coturn.log_text()[-2000:]}"
                    ) from None
