"""One worker process of ``serve --workers N``: a whole server with the media
of its channels, on a Unix socket only its front uses.

The front (``workers.WorkerPool``) starts it with ``python -m
signaling.media_worker``, writes its ``WorkerSpec`` (pickled) to its stdin and
waits for ``ready`` on its stdout. It drains on SIGTERM like any server, and
ends at once when its front is gone (stdin closes): the clients' sockets went
with the front.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import sys
from dataclasses import dataclass

from aiohttp import web

from diagnostics import logs

from . import drain
from .config import Settings


@dataclass
class WorkerSpec:
    settings: Settings
    index: int
    path: str


def _started(signalled: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if os.read(fd, 4096):
            return
        loop.remove_reader(fd)
        signalled.set()  # the front is gone: drain ...
        loop.call_later(0.5, signalled.set)  # ... and stop waiting for it

    loop.add_reader(fd, readable)
    print("ready", flush=True)


def main() -> None:
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)
    settings = spec.settings
    logs.configure(
        settings.log_level,
        settings.log_format,
        secrets=[settings.secret, settings.turn_secret],
    )
    from .app import create_app

    app = create_app(settings)
    gc.freeze()
    asyncio.run(
        drain.serve(
            app,
            lambda runner: web.UnixSite(runner, spec.path),
            drain.drainer(app),
            _started,
        )
    )


if __name__ == "__main__":
    main()
