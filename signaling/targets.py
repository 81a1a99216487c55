"""Where a front relays a channel's sockets: one of its workers, or another
node of the cluster (``Node``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp


class Target(Protocol):
    @property
    def http(self) -> aiohttp.ClientSession: ...

    @property
    def ws_url(self) -> str: ...


@dataclass(eq=False)
class Node:
    """Another node (its ``--node-url``)."""

    url: str
    http: aiohttp.ClientSession

    @property
    def ws_url(self) -> str:
        return self.url + "/ws"

    def __str__(self) -> str:
        return f"node {self.url}"
