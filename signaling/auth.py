"""Access tokens checked: HS256 JWTs with the claims of the contract (PyJWT);
minted by ``miscord_client.tokens.issue``."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import jwt
from aiohttp import web

from miscord_client.tokens import ALGORITHM, RIGHTS, ROLES, issue

__all__ = [
    "RELAYED_FOR",
    "RIGHTS",
    "ROLES",
    "AuthError",
    "Claims",
    "bearer",
    "issue",
    "relay_stamp",
    "relayed_for",
    "verify",
]

#: a front (or another node) relaying a client's socket names the client's
#: address here, signed with the shared secret: "ADDRESS SIGNATURE"
RELAYED_FOR = "X-Miscord-Relayed-For"


class AuthError(Exception):
    """Missing, invalid or expired token (401 / close 4401)."""


@dataclass(frozen=True)
class Claims:
    user_id: str
    name: str
    channels: tuple[str, ...]
    role: str
    expires: int
    #: the rights in its channels (``can``; every one by default)
    can: frozenset[str] = frozenset(RIGHTS)

    def may_join(self, channel: str) -> bool:
        return "*" in self.channels or channel in self.channels

    @property
    def support(self) -> bool:
        """Support staff's reading rights (an admin has them too)."""
        return self.role in ("support", "admin")


def verify(secret: str, token: str) -> Claims:
    if not token:
        raise AuthError("missing token")
    try:
        data = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    sub, name = data.get("sub"), data.get("name", data.get("sub"))
    channels = data.get("channels", [])
    role = data.get("role", "member")
    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise AuthError("invalid token: 'sub' must be a non-empty string")
    if not isinstance(name, str) or len(name) > 128:
        raise AuthError("invalid token: 'name' must be a string")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise AuthError("invalid token: 'channels' must be a list of strings")
    if role not in ROLES:
        raise AuthError(f"invalid token: unknown role {role!r}")
    can = data.get("can", list(RIGHTS))
    if not isinstance(can, list) or not set(can) <= set(RIGHTS):
        raise AuthError(f"invalid token: 'can' must list rights among {RIGHTS}")
    return Claims(sub, name, tuple(channels), role, int(data["exp"]), frozenset(can))


def bearer(request: web.Request, secret: str) -> Claims:
    """Claims of an HTTP request's ``Authorization: Bearer`` header, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "missing bearer token"}),
            content_type="application/json",
        )
    try:
        return verify(secret, token.strip())
    except AuthError as exc:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None


def _relay_signature(secret: str, address: str) -> str:
    key = hashlib.sha256(b"relay:" + secret.encode()).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


def relay_stamp(secret: str, address: str) -> str:
    """The ``RELAYED_FOR`` value a relay sends for ``address``."""
    return f"{address} {_relay_signature(secret, address)}"


def relayed_for(secret: str, value: str) -> str | None:
    """The client address a ``RELAYED_FOR`` value names, if its signature is
    right (None: absent or forged)."""
    address, _, signature = value.strip().rpartition(" ")
    if not address or not hmac.compare_digest(
        signature.encode(), _relay_signature(secret, address).encode()
    ):
        return None
    return address[:64]
