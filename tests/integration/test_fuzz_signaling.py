"""Random JSON thrown at /ws: the server answers every frame and stays healthy."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wsclient import Ws

TYPES = [
    "join",
    "offer",
    "answer",
    "candidate",
    "mute",
    "leave",
    "ping",
    "stats",
    "x",
    "",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.one_of(
    values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            "id": values,
            "pc": st.sampled_from(["publish", "subscribe", "x"]) | values,
            "sdp": st.text(max_size=200) | values,
            "sources": values,
            "source": values,
            "muted": values,
            "candidate": values,
            "token": values,
            "channel": values,
            "kind": values,
            "report": values,
        },
    ),
)


async def test_random_messages_never_break_the_server(start_server):
    server = await start_server(
        rate_limit=100000, rate_burst=100000, heartbeat_timeout=120
    )
    ws = await Ws.open(server.url)
    await ws.join(server.token("fuzzer"))
    watcher = await Ws.open(server.url)
    await watcher.join(server.token("watcher"), kind="events")
    generated = []

    # hypothesis generates; the socket I/O below is async, so examples are
    # collected first and replayed in order
    @settings(
        max_examples=600,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(message=messages)
    def collect(message):
        generated.append(message)

    collect()
    count = 0
    for message in generated:
        if isinstance(message, dict) and message.get("type") in ("leave", "join"):
            continue  # joining/leaving are exercised elsewhere; keep this session alive
        await ws.send(json.dumps(message))
        await ws.send({"type": "ping", "id": "after"})
        while (reply := await ws.recv()).get("ref") != "after":
            assert reply["type"] in (
                "error",
                "pong",
                "answer",
                "offer",
                "track_muted",
            ), reply
            if reply["type"] == "error":
                assert reply["code"] in (
                    "bad_json",
                    "bad_message",
                    "unknown_type",
                    "bad_sdp",
                    "forbidden",
                    "too_large",
                    "already_joined",
                    "rate_limited",  # more than one stats report a second
                )
                assert reply["message"]
        count += 1
    assert count > 300
    assert await ws.alive() and await watcher.alive()
    assert len(server.services.sfu.participants) == 1
    assert not server.services.manager.errors.get("internal")
    await ws.close()
    await watcher.close()
