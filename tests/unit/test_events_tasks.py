"""``sfu.events.EventBus`` (listeners in order, a failing one logged and the
others still called, unsubscribe) and ``sfu.tasks.TaskGroup`` (spawn, finished
tasks leave, failures logged, close cancels and waits at most ``timeout``,
spawn after close refused)."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from sfu.events import Event, EventBus, TrackMuted
from sfu.tasks import TaskGroup

LOGGER = "miscord.debug"


def muted(peer: str = "p1") -> TrackMuted:
    return TrackMuted(channel_id="c", peer_id=peer, source="microphone", muted=True)


# --- EventBus ---------------------------------------------------------------------


def test_listeners_get_the_event_in_subscription_order():
    bus, calls = EventBus(), []
    bus.subscribe(lambda e: calls.append(("a", e)))
    bus.subscribe(lambda e: calls.append(("b", e)))
    event = muted()
    bus.emit(event)
    assert calls == [("a", event), ("b", event)]


def test_emit_without_listeners_does_nothing():
    EventBus().emit(muted())


def test_failing_listener_does_not_stop_the_others(caplog):
    bus, calls = EventBus(), []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(calls.append)
    bus.subscribe(broken)
    bus.subscribe(calls.append)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        bus.emit(muted())
    assert len(calls) == 2
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "event listener failed on TrackMuted"
    assert record.exc_info[0] is RuntimeError


def test_unsubscribe_stops_delivery():
    bus, calls = EventBus(), []
    unsubscribe = bus.subscribe(calls.append)
    bus.emit(muted("p1"))
    unsubscribe()
    bus.emit(muted("p2"))
    assert [e.peer_id for e in calls] == ["p1"]


def test_unsubscribe_leaves_other_listeners():
    bus, a, b = EventBus(), [], []
    unsubscribe_a = bus.subscribe(a.append)
    bus.subscribe(b.append)
    unsubscribe_a()
    bus.emit(muted())
    assert (len(a), len(b)) == (0, 1)


def test_unsubscribe_during_emit_still_delivers_to_the_rest():
    bus, calls = EventBus(), []
    unsubscribers = []

    def once(event: Event) -> None:
        calls.append("once")
        unsubscribers[0]()

    unsubscribers.append(bus.subscribe(once))
    bus.subscribe(lambda e: calls.append("after"))
    bus.emit(muted())
    bus.emit(muted())
    assert calls == ["once", "after", "after"]


def test_events_are_frozen():
    with pytest.raises(AttributeError):
        muted().muted = False  # type: ignore[misc]


# --- TaskGroup --------------------------------------------------------------------


async def test_spawn_runs_and_names_the_task():
    group = TaskGroup("owner")
    task = group.spawn(asyncio.sleep(0, result=42), "nap")
    assert task.get_name() == "owner:nap"
    assert len(group) == 1
    assert await task == 42


async def test_finished_tasks_leave_the_group():
    group = TaskGroup("owner")
    tasks = [group.spawn(asyncio.sleep(0)) for _ in range(3)]
    await asyncio.gather(*tasks)
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert len(group) == 0


async def test_exceptions_are_logged_not_raised(caplog):
    async def fail() -> None:
        raise ValueError("bad")

    group = TaskGroup("owner")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        task = group.spawn(fail(), "worker")
        await asyncio.wait([task])
        await asyncio.sleep(0)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "task owner:worker failed"
    assert isinstance(record.exc_info[1], ValueError)
    assert len(group) == 0


async def test_close_cancels_and_waits(caplog):
    finished = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop
            finished.append(name)

    group = TaskGroup("owner")
    tasks = [group.spawn(forever(n), n) for n in ("a", "b")]
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await group.close(timeout=5)
    assert sorted(finished) == ["a", "b"]
    assert all(t.cancelled() for t in tasks)
    assert group.closed
    # a cancelled task is no failure
    assert not [r for r in caplog.records if r.name == LOGGER]


async def test_close_without_tasks():
    group = TaskGroup("owner")
    await group.close()
    assert group.closed


async def test_task_ignoring_cancellation_is_abandoned_and_logged(caplog):
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    group = TaskGroup("owner")
    task = group.spawn(stubborn(), "mule")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await asyncio.wait_for(group.close(timeout=0.05), 5)
    elapsed = loop.time() - start
    try:
        assert 0.04 <= elapsed < 1.0
        assert not task.done()
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert messages == ["task owner:mule ignored its cancellation"]
    finally:
        release.set()
        await task


async def test_close_from_inside_a_task_does_not_cancel_itself():
    group = TaskGroup("owner")
    other = group.spawn(asyncio.sleep(3600), "other")

    async def closer() -> str:
        await group.close(timeout=1)
        return "closed"

    task = group.spawn(closer(), "closer")
    assert await task == "closed"
    assert other.cancelled()


async def test_spawn_after_close_refuses_and_closes_the_coroutine():
    group = TaskGroup("owner")
    await group.close()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="owner is closed"):
        group.spawn(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert len(group) == 0
