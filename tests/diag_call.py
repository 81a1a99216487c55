"""Helpers for diagnostics tests: short judging windows, reports read over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import aiohttp

from diagnostics.findings import NETWORK
from tests.media import ToneTrack

#: judging windows short enough for tests (the defaults are for real calls)
FAST = {
    "window": 4.0,
    "silence_seconds": 2.0,
    "publish_grace": 2.0,
    "one_way_grace": 3.0,
}


async def diag_server(start_server, **overrides):
    server = await start_server(stats_interval=0.5, **overrides)
    diagnostics = server.services.diagnostics
    diagnostics.thresholds = dataclasses.replace(diagnostics.thresholds, **FAST)
    return server


async def participant(
    clients,
    server,
    user: str,
    freq: float | None = 440,
    stats: bool = True,
    **client_args,
):
    """A voice participant; ``freq`` None publishes nothing."""
    client = clients(server, user, **client_args)
    await client.join("room")
    if freq is not None:
        client.tone = ToneTrack(freq)
        await client.publish(microphone=client.tone)
    if stats:
        client.start_stats(1.0)
    return client


async def connected(server, *clients, timeout: float = 10.0) -> None:
    """Every client's participant is connected and receives the others."""
    sfu = server.services.sfu
    deadline = time.monotonic() + timeout
    while True:
        ready = all(
            (p := sfu.participants.get(c.peer_id)) is not None
            and p.state == "connected"
            and len(c.remote) >= sum(1 for o in clients if o is not c and o.published)
            for c in clients
        )
        if ready:
            return
        assert time.monotonic() < deadline, "the call did not connect in time"
        await asyncio.sleep(0.05)


async def fetch(
    server, path: str, token: str | None = "support", **kwargs: Any
) -> tuple[int, Any]:
    """GET (or ``method=``) a path; ``token`` is a user name (the support or
    admin role for "support", "admin") or None for no Authorization header."""
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        role = token if token in ("support", "admin") else "member"
        headers["Authorization"] = f"Bearer {server.token(token, role=role)}"
    method = kwargs.pop("method", "GET")
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kwargs) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def report(server, peer_id: str) -> dict[str, Any]:
    status, body = await fetch(server, f"/api/peers/{peer_id}/report")
    assert status == 200, body
    return body


async def wait_report(server, peer_id: str, until, timeout: float = 12.0) -> dict:
    """Poll the report until ``until(report)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        body = await report(server, peer_id)
        if until(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"report never matched: {summary(body)}")
        await asyncio.sleep(0.25)


def settled(body: dict[str, Any]) -> bool:
    """The report has enough samples for scores (4 s at the tests' interval)."""
    return len(body["series"]["t"]) >= 8 and body["downlink"]["score"] is not None


def has(code: str, side: str):
    return lambda body: (code, side) in found(body)


def found(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["code"], f["side"]) for f in body["findings"]}


def finding(body: dict[str, Any], code: str) -> dict[str, Any]:
    return next(f for f in body["findings"] if f["code"] == code)


def summary(body: dict[str, Any]) -> dict[str, Any]:
    """The report without its long parts, findings as (code, side, severity)."""
    short = {k: v for k, v in body.items() if k not in ("timeline", "series")}
    short["findings"] = [
        (f["code"], f["side"], f["severity"]) for f in body["findings"]
    ]
    return short


SEVERITY = {"info": 0, "warning": 1, "critical": 2}
VERDICT = {0: "ok", 1: "degraded", 2: "broken"}


def band(mos: float) -> int:
    return 0 if mos >= 4.0 else 1 if mos >= 2.6 else 2


def assert_consistent(body: dict[str, Any]) -> None:
    """The contract's rules (1.1): the verdict is the worst severity; a side's
    MOS lies in the band of its worst network finding; mute is info."""
    worst = max((SEVERITY[f["severity"]] for f in body["findings"]), default=0)
    assert body["verdict"] == VERDICT[worst], summary(body)
    for side in ("uplink", "downlink"):
        mos = body[side]["mos"]
        if mos is None:
            continue
        network = [
            SEVERITY[f["severity"]]
            for f in body["findings"]
            if f["code"] in NETWORK and f["side"] == side
        ]
        assert max(network, default=0) == band(mos), (side, summary(body))
    for f in body["findings"]:
        if f["code"] == "muted":
            assert f["severity"] == "info"


def row(case: str, body: dict[str, Any]) -> str:
    """One line of the fault matrix's table (printed with ``-s``)."""
    findings = ", ".join(
        f"{f['code']} ({f['side']}, {f['severity']})" for f in body["findings"]
    )
    up, down = body["uplink"], body["downlink"]
    line = (
        f"| {case} | {body['verdict']} | {findings or '—'} | "
        f"{up['mos']} ({up['loss_pct']} %) | {down['mos']} ({down['loss_pct']} %) |"
    )
    print("\nMATRIX " + line)
    return line
