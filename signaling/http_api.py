"""HTTP routes: the web client, health, config, development login, debug stats."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from . import auth

STATIC = Path(__file__).parent / "static"
USER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _services(request: web.Request) -> Any:
    from .app import SERVICES

    return request.app[SERVICES]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda d: json.dumps(d, default=str)
    )


def require_support(request: web.Request) -> auth.Claims:
    claims = auth.bearer(request, _services(request).settings.secret)
    if not claims.support:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "this needs a support token"}),
            content_type="application/json",
        )
    return claims


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    services = _services(request)
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
    return json_response({"dev_login": _services(request).settings.dev_login})


async def dev_login(request: web.Request) -> web.Response:
    """A token for anyone, only on a loopback bind without a configured secret."""
    services = _services(request)
    if not services.settings.dev_login:
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
    token = auth.issue(services.settings.secret, user, ["*"], role=role, name=user)
    return json_response({"token": token, "user": user, "role": role})


async def websocket_stats(request: web.Request) -> web.Response:
    require_support(request)
    return json_response(_services(request).manager.stats())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/config", config)
    app.router.add_post("/api/dev-login", dev_login)
    app.router.add_get("/api/debug/websocket-stats", websocket_stats)
    if STATIC.exists():
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
