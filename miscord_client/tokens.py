"""Access tokens as the server checks them: HS256 JWTs with the contract's
claims. Whoever holds the server's secret (the app that admits users, a bot, the
load tool) mints them here; the server verifies them (``signaling.auth``)."""

from __future__ import annotations

import time

import jwt

ROLES = ("member", "support")
ALGORITHM = "HS256"


def issue(
    secret: str,
    user: str,
    channels: list[str],
    role: str = "member",
    ttl: float = 24 * 3600,
    name: str | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    claims: dict[str, object] = {
        "sub": user,
        "channels": channels,
        "role": role,
        "exp": int(time.time() + ttl),
    }
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
