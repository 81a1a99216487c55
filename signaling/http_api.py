"""HTTP routes: the web client, health, config, development login, debug stats."""

from __future__ import annotations

import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from miscord_client.protocol import Close
from sfu.participant import Participant

from . import auth
from .connections import KICKED
from .services import services_of

STATIC = Path(__file__).parent / "static"
USER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda d: json.dumps(d, default=str)
    )


def require_support(request: web.Request) -> auth.Claims:
    return support_claims(request, services_of(request).settings.secret)


def support_claims(request: web.Request, secret: str) -> auth.Claims:
    """The request's claims if they are support's (or an admin's): else 401/403."""
    claims = auth.bearer(request, secret)
    if not claims.support:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "this needs a support token"}),
            content_type="application/json",
        )
    return claims


def require_admin(request: web.Request) -> auth.Claims:
    claims = auth.bearer(request, services_of(request).settings.secret)
    if claims.role != "admin":
        raise _error(web.HTTPForbidden, "this needs an admin token")
    return claims


def _error(kind: type[web.HTTPException], text: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": text}), content_type="application/json")


async def channels(request: web.Request) -> web.Response:
    """Every voice channel and who is in it (support and admin)."""
    require_support(request)
    services = services_of(request)
    return json_response(
        [
            {"channel": channel, "participants": services.participants_of(channel)}
            for channel in sorted(services.sfu.channels)
        ]
    )


def _moderated(request: web.Request) -> Participant:
    """The participant an admin's request names, or 404."""
    require_admin(request)
    services = services_of(request)
    participant = services.sfu.participants.get(request.match_info["peer_id"])
    if participant is None or participant.channel_id != request.match_info["channel"]:
        raise _error(web.HTTPNotFound, "no such participant in this channel")
    return participant


async def kick(request: web.Request) -> web.Response:
    """Close the peer's socket with 4003 and end it (``participant_left``
    ``kicked``): its media and its resume token end with it."""
    participant = _moderated(request)
    services = services_of(request)
    manager = services.manager
    conn = manager.by_peer.get(participant.peer_id)
    voice = manager.voices.by_peer.get(participant.peer_id)
    if conn is not None:
        await manager.end(conn, KICKED, Close.KICKED, "kicked by an admin")
    elif voice is not None:  # kept for a resume: no socket to close
        await manager.voices.end(voice, KICKED)
    else:
        await services.sfu.leave(participant, KICKED)
    return json_response({"peer_id": participant.peer_id, "kicked": True})


async def server_mute(request: web.Request) -> web.Response:
    """Stop (or resume) forwarding a source; the peer cannot undo it."""
    participant = _moderated(request)
    try:
        body = await request.json()
        source, muted = body["source"], body["muted"]
        if source not in ("microphone", "screen") or not isinstance(muted, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise _error(
            web.HTTPBadRequest,
            'body must be {"source": "microphone"|"screen", "muted": true|false}',
        ) from None
    try:
        participant.server_mute(source, muted)
    except LookupError as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None
    return json_response(
        {"peer_id": participant.peer_id, "source": source, "muted": muted}
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer: 503 from the moment the server drains
    (``/healthz`` stays the liveness probe)."""
    if services_of(request).manager.draining:
        return json_response({"status": "draining"}, status=503)
    return json_response({"status": "ready"})


async def healthz(request: web.Request) -> web.Response:
    services = services_of(request)
    return json_response(
        {
            "status": "ok",
            "uptime": round(time.time() - services.started_at, 1),
            "connections": len(services.manager.live),
            "participants": len(services.sfu.participants),
            "channels": len(services.sfu.channels),
            "forwarding": services.settings.forwarding,
        }
    )


async def config(request: web.Request) -> web.Response:
    """What the web client needs to know before signing in."""
    return json_response({"dev_login": services_of(request).settings.dev_login})


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def loopback_host(request: web.Request) -> bool:
    """The page was asked for by a loopback name: a DNS-rebinding page (a
    stranger's name pointed at 127.0.0.1) sends its own name in ``Host``."""
    try:
        host = (URL.build(scheme="http", authority=request.host).host or "").lower()
    except ValueError:
        return False
    return host in LOOPBACK_NAMES or host.endswith(".localhost")


async def dev_login(request: web.Request) -> web.Response:
    """A token for anyone, only on a loopback bind without a configured secret,
    asked for by a loopback name; a support token only if the server allows it."""
    services = services_of(request)
    if not services.settings.dev_login or not loopback_host(request):
        raise web.HTTPNotFound(
            text=json.dumps({"error": "development login is off"}),
            content_type="application/json",
        )
    try:
        body = await request.json()
        user = body["user"]
        role = body.get("role", "member")
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": 'body must be {"user": "name"}'}),
            content_type="application/json",
        ) from None
    if not isinstance(user, str) or not USER_ID.match(user) or role not in auth.ROLES:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "user must be 1-64 of A-Z a-z 0-9 _ . -"}),
            content_type="application/json",
        )
    if role != "member" and not services.settings.dev_support:
        raise web.HTTPForbidden(
            text=json.dumps(
                {"error": "the development login issues member tokens only"}
            ),
            content_type="application/json",
        )
    token = auth.issue(services.settings.secret, user, ["*"], role=role, name=user)
    return json_response({"token": token, "user": user, "role": role})


async def websocket_stats(request: web.Request) -> web.Response:
    require_support(request)
    services = services_of(request)
    ports = services.sfu.ports
    return json_response(
        {
            **services.manager.stats(),
            # the media port range: its size, promised to participants, bound
            "rtc_ports": ports.stats() if ports is not None else None,
            "webhooks": services.webhooks.stats(),
        }
    )


async def forwarding_stats(request: web.Request) -> web.Response:
    require_support(request)
    reset = request.query.get("reset") == "1"
    return json_response(services_of(request).sfu.forwarding_stats(reset))


def _peer_access(request: web.Request) -> str:
    """The peer id of the route, if the token is support's or that peer's user.

    401 without a valid token, 404 for a peer never seen (or long forgotten),
    403 for someone else's peer.
    """
    services = services_of(request)
    claims = auth.bearer(request, services.settings.secret)
    peer_id = request.match_info["peer_id"]
    owner = services.diagnostics.owner_of(peer_id)
    if owner is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown peer {peer_id}"}),
            content_type="application/json",
        )
    if not claims.support and claims.user_id != owner:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "only support or the peer's own user"}),
            content_type="application/json",
        )
    return peer_id


async def peers(request: web.Request) -> web.Response:
    require_support(request)
    return json_response(services_of(request).diagnostics.peers())


async def peer_stats(request: web.Request) -> web.Response:
    peer_id = _peer_access(request)
    return json_response(services_of(request).diagnostics.stats(peer_id))


async def peer_report(request: web.Request) -> web.Response:
    peer_id = _peer_access(request)
    diagnostics = services_of(request).diagnostics
    wants_html = request.query.get("format") == "html" or (
        "text/html" in request.headers.get("Accept", "")
        and request.query.get("format") != "json"
    )
    if wants_html:
        return web.Response(
            text=diagnostics.report_html(peer_id), content_type="text/html"
        )
    return json_response(diagnostics.report(peer_id))


async def audio_logging(request: web.Request) -> web.Response:
    """Support, or the peer's own user (the web client's enableAudioDataLogging)."""
    peer_id = _peer_access(request)
    try:
        body = await request.json()
        enabled = body["enabled"]
        if not isinstance(enabled, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": 'body must be {"enabled": true|false}'}),
            content_type="application/json",
        ) from None
    diagnostics = services_of(request).diagnostics
    try:
        diagnostics.set_audio_logging(peer_id, enabled)
    except LookupError as exc:
        raise web.HTTPConflict(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None
    return json_response({"peer_id": peer_id, "audio_logging": enabled})


async def metrics(request: web.Request) -> web.Response:
    services = services_of(request)
    expected = services.settings.metrics_token
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "/metrics needs its bearer token"}),
                content_type="application/json",
            )
    body, content_type = services.diagnostics.metrics()
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/config", config)
    app.router.add_post("/api/dev-login", dev_login)
    app.router.add_get("/api/debug/websocket-stats", websocket_stats)
    app.router.add_get("/api/debug/forwarding", forwarding_stats)
    app.router.add_get("/api/peers", peers)
    app.router.add_get("/api/channels", channels)
    moderate = "/api/channels/{channel}/participants/{peer_id}"
    app.router.add_post(moderate + "/kick", kick)
    app.router.add_post(moderate + "/mute", server_mute)
    app.router.add_get("/api/peers/{peer_id}/stats", peer_stats)
    app.router.add_get("/api/peers/{peer_id}/report", peer_report)
    app.router.add_post("/api/peers/{peer_id}/audio-logging", audio_logging)
    app.router.add_get("/metrics", metrics)
    if STATIC.exists():
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
