"""Access tokens as the server checks them: HS256 JWTs with the contract's
claims. Whoever holds the server's secret (the app that admits users, a bot, the
load tool) mints them here; the server verifies them (``signaling.auth``)."""

from __future__ import annotations

import time

import jwt

ROLES = ("member", "support", "admin")
#: what a token may do in its channels (contract 1.1, the ``can`` claim):
#: publish a microphone, publish a screen, receive the others
RIGHTS = ("speak", "screen", "listen")
ALGORITHM = "HS256"


def issue(
    secret: str,
    user: str,
    channels: list[str],
    role: str = "member",
    ttl: float = 24 * 3600,
    name: str | None = None,
    can: list[str] | None = None,
) -> str:
    """A token; ``can`` None: every right."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if can is not None and not set(can) <= set(RIGHTS):
        raise ValueError(f"can must name rights among {RIGHTS}")
    claims: dict[str, object] = {
        "sub": user,
        "channels": channels,
        "role": role,
        "exp": int(time.time() + ttl),
    }
    if name:
        claims["name"] = name
    if can is not None:
        claims["can"] = list(can)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
