"""``miscord-sfu serve`` in its own process plus one test-only route,
``GET /test/census``: what a leak would grow, read from inside the process.

    python -m tests.load_server --port 8080 --secret S [serve flags...]

Soak, fault and abuse tests run the server this way so that its file
descriptors and memory are its own (no test client shares the process) while
asyncio tasks, peer connections and registries, which only the process itself
can see, are still countable. Everything else is the unchanged ``serve`` path.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import re
import sys
import time
from typing import Any

import psutil
from aiohttp import web
from aiortc import RTCPeerConnection

import signaling.app
from signaling import cli
from tests.voice import server_counts

#: (generation, seconds) of the cyclic collector's recent runs
_collections: collections.deque[tuple[int, float]] = collections.deque(maxlen=10000)
_collecting: dict[str, float] = {}


def _time_collections(phase: str, info: dict[str, int]) -> None:
    """gc callback: how long each collection stalls the event loop."""
    if phase == "start":
        _collecting["at"] = time.perf_counter()
    elif "at" in _collecting:
        _collections.append(
            (info["generation"], time.perf_counter() - _collecting.pop("at"))
        )


_ID = re.compile(r"[0-9a-f]{6,}|(?<=Task-)[0-9]+")


def census(services: Any, full: bool = True) -> dict[str, Any]:
    """Counts that must return to their starting values once clients are gone.

    Only ``full`` collects garbage and counts peer connections: that blocks the
    event loop for tens of milliseconds, so tests that measure gaps in the
    audio poll without it.
    """
    me = asyncio.current_task()
    tasks = collections.Counter(
        _ID.sub("*", t.get_name()) for t in asyncio.all_tasks() if t is not me
    )
    manager = services.manager
    # diagnostics' peer store (issue 8); departed peers stay, bounded, by design
    store = getattr(services.diagnostics, "store", None)
    counts = {
        **server_counts(services),
        "by_user": len(manager.by_user),
        "by_channel": len(manager.by_channel),
        "user_locks": len(manager._user_locks),
        "diagnosed_live": len(store.live) if store else 0,
        "diagnosed_departed": len(store.departed) if store else 0,
        "tasks": sum(tasks.values()),
        "task_names": dict(tasks),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": psutil.Process().memory_info().rss,
        "gc": {
            f"gen{g}": {
                "runs": len(times := [t for gen, t in _collections if gen == g]),
                "max_ms": round(1000 * max(times, default=0.0), 1),
            }
            for g in range(3)
        },
    }
    if full:
        gc.callbacks.remove(_time_collections)  # this one is the census's own
        gc.collect()
        gc.callbacks.append(_time_collections)
        objects = gc.get_objects()
        pcs = [o for o in objects if isinstance(o, RTCPeerConnection)]
        counts["peer_connections"] = len(pcs)
        counts["open_peer_connections"] = sum(
            pc.connectionState != "closed" for pc in pcs
        )
        # what a leak is made of, when one shows
        counts["objects"] = dict(
            collections.Counter(type(o).__qualname__ for o in objects).most_common(300)
        )
    return counts


async def census_route(request: web.Request) -> web.Response:
    full = request.query.get("quick") != "1"
    return web.json_response(census(request.app[signaling.app.SERVICES], full))


def main() -> int:
    create_app = signaling.app.create_app

    def with_census(settings: Any = None) -> web.Application:
        app = create_app(settings)
        app.router.add_get("/test/census", census_route)
        return app

    signaling.app.create_app = with_census  # cli's serve imports it when called
    gc.callbacks.append(_time_collections)
    return cli.main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
