"""Children refer to their owner weakly: the tree frees by reference counting.

A participant owns its sessions and publications, a channel its participants, the
server its channels. Were the back-references strong, every closed participant
would be a reference cycle left for CPython's full collection, whose pauses
(hundreds of ms with many peer connections) stall every call on the server.
"""

from __future__ import annotations

import weakref
from typing import TypeVar

T = TypeVar("T")


def owner(obj: T) -> T:
    """A weak proxy to ``obj`` (or ``obj`` itself if it is one already)."""
    if isinstance(obj, weakref.ProxyTypes):
        return obj
    return weakref.proxy(obj)
