"""The ICE servers a client is handed in ``joined``: STUN/TURN URLs as
configured, TURN ones with time-limited credentials in the TURN REST scheme
that coturn's ``use-auth-secret`` checks (username ``"<unix expiry>:<user
id>"``, password ``base64(HMAC-SHA1(secret, username))``), so the server and
the TURN server share a secret and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from miscord_client.protocol import IceServer

#: RFC 7064 / 7065 URIs: scheme, host (name, IPv4 or [IPv6]), port, and for
#: TURN a transport
_URL = re.compile(
    r"\A(?P<scheme>stuns?|turns?):"
    r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?\Z"
)


def check_url(url: str) -> bool:
    """Whether ``url`` is a valid STUN/TURN URL; returns True for TURN ones
    (they need credentials). Raises ValueError naming what is wrong."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(
            f"{url!r} is not a STUN or TURN URL "
            "(e.g. turn:turn.example.org:3478?transport=udp)"
        )
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{url!r}: port {port} is out of range")
    turn = match["scheme"].startswith("turn")
    if match["transport"] and not turn:
        raise ValueError(f"{url!r}: only TURN URLs take a transport")
    return turn


def credentials(secret: str, user_id: str, ttl: float, now: float) -> tuple[str, str]:
    """(username, credential) valid until ``now + ttl`` for ``user_id``."""
    username = f"{int(now + ttl)}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    urls: list[str],
    secret: str,
    ttl: float,
    user_id: str,
    now: float | None = None,
) -> list[IceServer]:
    """RTCIceServer dictionaries: the STUN URLs in one, the TURN URLs with
    fresh credentials in another (``urls`` checked by the settings)."""
    stun = [url for url in urls if not check_url(url)]
    turn = [url for url in urls if check_url(url)]
    servers: list[IceServer] = []
    if stun:
        servers.append({"urls": stun})
    if turn:
        username, credential = credentials(
            secret, user_id, ttl, time.time() if now is None else now
        )
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers
