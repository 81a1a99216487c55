"""Every peer diagnostics knows: the live ones and the recently departed.

A departed peer stays ``retention`` seconds so a dropped user can still be
diagnosed, and at most ``max_departed`` of them are kept (oldest go first), so
a busy server's memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from .records import PeerRecord

#: seconds after leaving that a peer's client reports are kept whole; then
#: only the last (a summary) stays, for as long as the record does
CLIENT_KEEP = 60.0


class PeerStore:
    def __init__(self, retention: float, max_departed: int) -> None:
        self.retention = retention
        self.max_departed = max_departed
        self.live: dict[str, PeerRecord] = {}
        self.departed: OrderedDict[str, PeerRecord] = OrderedDict()
        #: departed peers whose client reports are still whole, oldest first
        self._untrimmed: deque[PeerRecord] = deque()

    def get(self, peer_id: str) -> PeerRecord | None:
        return self.live.get(peer_id) or self.departed.get(peer_id)

    def add(self, record: PeerRecord) -> None:
        self.live[record.peer_id] = record

    def depart(self, peer_id: str, reason: str, t: float) -> PeerRecord | None:
        record = self.live.pop(peer_id, None)
        if record is None:
            return None
        record.left_at, record.leave_reason = t, reason
        record.state, record.state_since = "closed", t
        self.departed[peer_id] = record
        self._untrimmed.append(record)
        self.prune(t)
        return record

    def prune(self, now: float) -> None:
        while self._untrimmed and now - (self._untrimmed[0].left_at or now) > (
            CLIENT_KEEP
        ):
            record = self._untrimmed.popleft()
            while len(record.client) > 1:
                record.client.popleft()
        while self.departed:
            oldest = next(iter(self.departed.values()))
            expired = now - (oldest.left_at or now) > self.retention
            if not expired and len(self.departed) <= self.max_departed:
                return
            self.departed.popitem(last=False)

    def all(self) -> list[PeerRecord]:
        return [*self.live.values(), *self.departed.values()]
