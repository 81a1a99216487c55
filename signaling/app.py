"""The aiohttp application: routes, services and their lifecycle.

Everything long-lived starts in the app's cleanup context and stops there:
shutdown ends every connection (1001), every participant and every task.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from diagnostics import logs
from diagnostics.service import Diagnostics
from sfu import events
from sfu.server import SfuServer

from . import http_api
from .config import Settings
from .connections import ConnectionManager
from .router import EventRouter
from .services import SERVICES, Services
from .session import websocket_handler
from .voices import Voices
from .webhooks import Webhooks

log = logs.get("websocket")


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings()
    app = web.Application(client_max_size=1024 * 1024)
    bus = events.EventBus()
    sfu = SfuServer(settings.media(), bus)
    manager = ConnectionManager(settings, Voices(settings.resume_grace, sfu.leave))
    diagnostics = Diagnostics(settings.diagnostics(), sfu, manager)
    webhooks = Webhooks(settings.webhook_urls, settings.secret, sfu)
    app[SERVICES] = Services(settings, sfu, manager, diagnostics, webhooks)
    bus.subscribe(EventRouter(manager))
    bus.subscribe(webhooks)
    diagnostics.registry.register(webhooks)

    app.router.add_get("/ws", websocket_handler)
    http_api.add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.started_at = time.time()
    await services.sfu.start()
    services.manager.tasks.spawn(services.manager.heartbeat(), "heartbeat")
    services.manager.tasks.spawn(services.manager.sweep_forever(), "sweep")
    await services.diagnostics.start()
    logs.success(
        log,
        "serving on %s:%s (ICE on %s, forwarding: %s)",
        services.settings.host,
        services.settings.port,
        ", ".join(services.settings.ice_hosts) or "all addresses",
        services.settings.forwarding,
    )
    yield
    await _on_shutdown(app)
    await services.webhooks.close()
    await services.diagnostics.close()
    await services.sfu.close()


async def _on_shutdown(app: web.Application) -> None:
    """End every connection with 1001 before aiohttp waits for the handlers."""
    await app[SERVICES].manager.shutdown()
