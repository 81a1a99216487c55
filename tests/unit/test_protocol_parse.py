"""``signaling.protocol.parse`` and ``error``: every client message type with its
fields, and each refusal with the contract's error code (and the ``id`` it
carries back as ``ref``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miscord_client.protocol import MAX_CANDIDATE, MAX_SDP
from signaling.protocol import (
    BAD_JSON,
    BAD_MESSAGE,
    BAD_SDP,
    UNKNOWN_TYPE,
    Answer,
    Candidate,
    Join,
    Leave,
    Mute,
    Offer,
    Ping,
    ProtocolError,
    Stats,
    error,
    parse,
)

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(text)
    return info.value


# --- accepted messages ------------------------------------------------------------


def test_join_parses_every_field():
    envelope = parse(
        frame(type="join", token="tok", channel="general", kind="voice", id=7)
    )
    assert envelope.type == "join"
    assert envelope.ref == 7
    assert envelope.body == Join(token="tok", channel="general", kind="voice")


def test_join_events_kind_parses():
    body = parse(frame(type="join", token="t", channel="c", kind="events")).body
    assert body == Join(token="t", channel="c", kind="events")


@pytest.mark.parametrize("token", [None, 5, ["t"], {"t": 1}, True])
def test_join_without_string_token_parses_with_empty_token(token):
    fields: dict[str, Any] = {"type": "join", "channel": "general", "kind": "voice"}
    if token is not None:
        fields["token"] = token
    body = parse(json.dumps(fields)).body
    assert body == Join(token="", channel="general", kind="voice")


def test_offer_parses_sources_and_sdp():
    sources = {"0": "microphone", "1": "screen"}
    envelope = parse(frame(type="offer", pc="publish", sdp=SDP, sources=sources))
    assert envelope.body == Offer(pc="publish", sdp=SDP, sources=sources)
    assert envelope.ref is None


def test_offer_with_empty_sources_parses():
    body = parse(frame(type="offer", pc="publish", sdp=SDP, sources={})).body
    assert body == Offer(pc="publish", sdp=SDP, sources={})


def test_offer_sdp_of_exactly_max_length_parses():
    sdp = "v" * MAX_SDP
    body = parse(frame(type="offer", pc="publish", sdp=sdp, sources={})).body
    assert isinstance(body, Offer)
    assert len(body.sdp) == MAX_SDP


def test_answer_parses():
    envelope = parse(frame(type="answer", pc="subscribe", sdp=SDP, id="a1"))
    assert envelope.body == Answer(pc="subscribe", sdp=SDP)
    assert envelope.ref == "a1"


def test_candidate_parses_and_drops_unknown_keys():
    cand = {
        "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd",
    }
    body = parse(frame(type="candidate", pc="publish", candidate=cand)).body
    assert body == Candidate(
        pc="publish",
        candidate={
            "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        },
    )


def test_candidate_missing_mid_and_index_become_none():
    body = parse(frame(type="candidate", pc="subscribe", candidate={"candidate": ""}))
    assert body.body == Candidate(
        pc="subscribe",
        candidate={"candidate": "", "sdpMid": None, "sdpMLineIndex": None},
    )


def test_candidate_null_is_end_of_candidates():
    body = parse(frame(type="candidate", pc="publish", candidate=None)).body
    assert body == Candidate(pc="publish", candidate=None)


@pytest.mark.parametrize("source", ["microphone", "screen"])
@pytest.mark.parametrize("muted", [True, False])
def test_mute_parses(source, muted):
    body = parse(frame(type="mute", source=source, muted=muted)).body
    assert body == Mute(source=source, muted=muted)


@pytest.mark.parametrize(("kind", "body"), [("leave", Leave()), ("ping", Ping())])
def test_bodiless_messages_parse_and_ignore_extra_fields(kind, body):
    envelope = parse(frame(type=kind, id="x", extra=[1, 2]))
    assert envelope.body == body
    assert envelope.type == kind
    assert envelope.ref == "x"


def test_stats_keeps_report_untouched():
    report = {"timestamp": 1.5, "outbound": [{"packetsSent": 3}], "anything": "x"}
    assert parse(frame(type="stats", report=report)).body == Stats(report=report)


# --- id / ref ---------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["abc", 0, -5, 12345678901234, "x" * 64, ""])
def test_id_string_or_integer_is_the_ref(ref):
    assert parse(frame(type="ping", id=ref)).ref == ref


def test_id_null_or_missing_is_no_ref():
    assert parse(frame(type="ping", id=None)).ref is None
    assert parse(frame(type="ping")).ref is None


@pytest.mark.parametrize(
    "ref", [True, False, 1.5, [1], {"a": 1}, "x" * 65, 10**64], ids=repr
)
def test_id_refused_unless_short_string_or_integer(ref):
    exc = refused(frame(type="ping", id=ref))
    assert exc.code == BAD_MESSAGE
    assert "'id'" in exc.message
    assert exc.ref is None


def test_field_errors_carry_the_id_as_ref():
    exc = refused(frame(type="mute", source="camera", muted=True, id="m-9"))
    assert exc.code == BAD_MESSAGE
    assert exc.ref == "m-9"


def test_unknown_type_carries_the_id_as_ref():
    exc = refused(frame(type="dance", id=42))
    assert (exc.code, exc.ref) == (UNKNOWN_TYPE, 42)


# --- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "{'type': 'ping'}", "nope", "[" * 100_000])
def test_not_json_is_bad_json(text):
    exc = refused(text)
    assert exc.code == BAD_JSON
    assert exc.message.startswith("not valid JSON")


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", "true"])
def test_json_that_is_not_an_object_is_bad_message(text):
    exc = refused(text)
    assert exc.code == BAD_MESSAGE
    assert exc.message == "a message must be a JSON object"


@pytest.mark.parametrize("kind", [None, 1, ["join"], True])
def test_missing_or_non_string_type_is_bad_message(kind):
    text = json.dumps({} if kind is None else {"type": kind})
    exc = refused(text)
    assert exc.code == BAD_MESSAGE
    assert "'type'" in exc.message


@pytest.mark.parametrize("kind", ["JOIN", "error", "joined", "", "x" * 1000])
def test_unknown_type_is_unknown_type(kind):
    exc = refused(frame(type=kind))
    assert exc.code == UNKNOWN_TYPE
    # the echoed type is cut short
    assert len(exc.message) < 80


@pytest.mark.parametrize(
    "channel",
    ["", "-general", ".a", "_a", "a b", "a/b", "é", "a" * 65, "chan;drop", "a\tb"],
)
def test_join_bad_channel_id_is_bad_message(channel):
    exc = refused(frame(type="join", token="t", channel=channel, kind="voice"))
    assert exc.code == BAD_MESSAGE
    assert "'channel'" in exc.message


def test_join_channel_with_trailing_newline_is_bad_message():
    exc = refused(frame(type="join", token="t", channel="general\n", kind="voice"))
    assert exc.code == BAD_MESSAGE


@pytest.mark.parametrize("channel", ["a", "A.b:c-d_e", "0", "x" * 64])
def test_join_valid_channel_ids_parse(channel):
    body = parse(frame(type="join", token="t", channel=channel, kind="voice")).body
    assert body.channel == channel


@pytest.mark.parametrize(
    "fields",
    [
        {"channel": "c"},
        {"kind": "voice"},
        {"channel": 5, "kind": "voice"},
        {"channel": "c", "kind": "video"},
        {"channel": "c", "kind": None},
    ],
    ids=["no-kind", "no-channel", "int-channel", "bad-kind", "null-kind"],
)
def test_join_bad_fields_are_bad_message(fields):
    exc = refused(json.dumps({"type": "join", "token": "t", **fields}))
    assert exc.code == BAD_MESSAGE


@pytest.mark.parametrize("kind", ["offer", "answer"])
@pytest.mark.parametrize("sdp", ["", "   ", "\r\n\t"], ids=["empty", "spaces", "ws"])
def test_empty_sdp_is_bad_sdp(kind, sdp):
    exc = refused(frame(type=kind, pc="publish", sdp=sdp, sources={}))
    assert exc.code == BAD_SDP
    assert "empty" in exc.message


@pytest.mark.parametrize("kind", ["offer", "answer"])
def test_too_long_sdp_is_bad_sdp(kind):
    exc = refused(frame(type=kind, pc="publish", sdp="v" * (MAX_SDP + 1), sources={}))
    assert exc.code == BAD_SDP
    assert str(MAX_SDP) in exc.message


@pytest.mark.parametrize("sdp", [None, 5, ["v=0"], True])
def test_non_string_sdp_is_bad_message(sdp):
    fields = {"type": "answer", "pc": "subscribe", "sdp": sdp}
    exc = refused(json.dumps(fields))
    assert exc.code == BAD_MESSAGE
    assert "'sdp'" in exc.message


def test_missing_sdp_is_bad_message():
    exc = refused(frame(type="offer", pc="publish", sources={}))
    assert (exc.code, exc.message) == (BAD_MESSAGE, "missing field 'sdp'")


@pytest.mark.parametrize("pc", ["both", "", None, 1])
def test_bad_pc_is_bad_message(pc):
    exc = refused(json.dumps({"type": "answer", "pc": pc, "sdp": SDP}))
    assert exc.code == BAD_MESSAGE
    assert "'pc'" in exc.message


@pytest.mark.parametrize(
    "sources",
    [{"0": "camera"}, {"0": None}, {"x" * 33: "microphone"}, ["0"], "microphone"],
    ids=["bad-source", "null-source", "long-mid", "list", "string"],
)
def test_offer_bad_sources_is_bad_message(sources):
    exc = refused(frame(type="offer", pc="publish", sdp=SDP, sources=sources))
    assert exc.code == BAD_MESSAGE


def test_offer_mid_of_32_characters_parses():
    sources = {"m" * 32: "screen"}
    body = parse(frame(type="offer", pc="publish", sdp=SDP, sources=sources)).body
    assert body.sources == sources


@pytest.mark.parametrize(
    "candidate",
    [
        {},
        {"candidate": 5},
        {"candidate": "c", "sdpMid": 0},
        {"candidate": "c", "sdpMLineIndex": "0"},
        {"candidate": "c", "sdpMLineIndex": True},
        {"candidate": "c", "sdpMLineIndex": 0.5},
        {"candidate": "c" * (MAX_CANDIDATE + 1)},
        "candidate:1 1 udp 1 1.2.3.4 5 typ host",
    ],
    ids=[
        "no-text",
        "int-text",
        "int-mid",
        "str-index",
        "bool-index",
        "float-index",
        "too-long",
        "bare-string",
    ],
)
def test_bad_candidate_is_bad_message(candidate):
    exc = refused(frame(type="candidate", pc="publish", candidate=candidate))
    assert exc.code == BAD_MESSAGE


def test_candidate_of_max_length_parses():
    text = "c" * MAX_CANDIDATE
    body = parse(frame(type="candidate", pc="publish", candidate={"candidate": text}))
    assert body.body.candidate["candidate"] == text


def test_candidate_field_missing_is_bad_message():
    exc = refused(frame(type="candidate", pc="publish"))
    assert (exc.code, exc.message) == (BAD_MESSAGE, "missing field 'candidate'")


@pytest.mark.parametrize("muted", [1, 0, "true", None])
def test_mute_non_boolean_is_bad_message(muted):
    exc = refused(json.dumps({"type": "mute", "source": "microphone", "muted": muted}))
    assert exc.code == BAD_MESSAGE
    assert "'muted' must be a boolean" in exc.message


@pytest.mark.parametrize("report", [[], "x", 1, None])
def test_stats_non_object_report_is_bad_message(report):
    exc = refused(json.dumps({"type": "stats", "report": report}))
    assert exc.code == BAD_MESSAGE
    assert "'report'" in exc.message


# --- properties -------------------------------------------------------------------


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_with_a_contract_code(text):
    try:
        parse(text)
    except ProtocolError as exc:
        assert exc.code in (BAD_JSON, BAD_MESSAGE, UNKNOWN_TYPE, BAD_SDP)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


TYPES = ["join", "offer", "answer", "candidate", "mute", "leave", "ping", "stats"]
FIELDS = ["id", "token", "channel", "kind", "pc", "sdp", "sources", "candidate"]
FIELDS += ["source", "muted", "report"]


@given(st.sampled_from(TYPES), st.dictionaries(st.sampled_from(FIELDS), JSON))
def test_any_object_of_a_known_type_parses_or_is_refused(kind, fields):
    try:
        envelope = parse(json.dumps({**fields, "type": kind}))
    except ProtocolError as exc:
        assert exc.code in (BAD_MESSAGE, BAD_SDP)
    else:
        assert envelope.type == kind


# --- error ------------------------------------------------------------------------


def test_error_builds_the_contract_message():
    assert error("bad_sdp", "no m-line", "r1") == {
        "type": "error",
        "code": "bad_sdp",
        "message": "no m-line",
        "ref": "r1",
    }


def test_error_ref_defaults_to_none():
    assert error("internal", "oops")["ref"] is None
