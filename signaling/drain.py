"""Running the server: readiness, draining on SIGTERM/SIGINT (contract 1.1,
"Operating it") and systemd's notify protocol.

A deploy must not cut calls mid-word: on the first signal the server stops
taking joins and resumes (``/readyz`` 503, the first ``join``/``resume`` closed
1013), tells every connection ``draining`` with the deadline, and waits until
the last voice participant has left or ``drain_timeout`` has passed; only then
does the app shut down (1001 for what is left). A second signal ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from diagnostics import logs

from .connections import TIMEOUT, ConnectionManager
from .services import SERVICES

log = logs.get("websocket")


def notify(state: str) -> None:
    """Tell systemd (``Type=notify``) ``state`` when it asked (``NOTIFY_SOCKET``)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("systemd notification %r failed: %s", state, exc)


async def drain(manager: ConnectionManager, timeout: float) -> None:
    """Refuse newcomers, tell everyone, and wait for the calls to end (at
    most ``timeout`` seconds). Participants awaiting a resume end now: their
    resume would be refused."""
    manager.draining = True
    notify("STOPPING=1")
    for voice in manager.voices.kept():
        await manager.voices.end(voice, TIMEOUT)
    log.warning(
        "draining: %d voice participants, at most %.0f s",
        len(manager.voices.by_peer),
        timeout,
    )
    for conn in list(manager.live.values()):
        manager.send(conn, {"type": "draining", "deadline_s": timeout})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(manager.voices.empty.wait(), timeout)


Drainer = Callable[[], Coroutine[Any, Any, None]]


def drainer(app: web.Application) -> Drainer:
    """How ``app`` (a server with its own media) drains."""
    services = app[SERVICES]
    return lambda: drain(services.manager, services.settings.drain_timeout)


async def serve(
    app: web.Application,
    site: Callable[[web.AppRunner], web.BaseSite],
    drains: Drainer,
    started: Callable[[asyncio.Event], None] = lambda signalled: None,
) -> None:
    """Serve ``app`` on ``site`` until a signal (or ``started``'s hook sets
    ``signalled``), drain, then shut it down."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await site(runner).start()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        started(signalled)
        notify("READY=1")
        await signalled.wait()
        signalled.clear()
        draining = asyncio.create_task(drains())
        again = asyncio.create_task(signalled.wait())
        await asyncio.wait({draining, again}, return_when=asyncio.FIRST_COMPLETED)
        for task in (draining, again):
            task.cancel()
        log.info("drained: closing what is left")
    finally:
        await runner.cleanup()
