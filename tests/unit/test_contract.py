"""The signaling contract in ``miscord_client.protocol``: its error and close
codes (shared with ``signaling.protocol``), the channel id pattern, the message
types ``signaling.protocol`` parses, and that ``signaling.messages`` builds
dicts with exactly the keys of the contract's TypedDicts."""

from __future__ import annotations

import typing

import pytest

import signaling.protocol as server_protocol
from miscord_client import protocol
from sfu.events import ParticipantView, TrackView
from signaling import messages

CONTRACT_CODES = {
    "BAD_JSON": "bad_json",
    "BAD_MESSAGE": "bad_message",
    "UNKNOWN_TYPE": "unknown_type",
    "NOT_JOINED": "not_joined",
    "ALREADY_JOINED": "already_joined",
    "FORBIDDEN": "forbidden",
    "BAD_SDP": "bad_sdp",
    "RATE_LIMITED": "rate_limited",
    "TOO_LARGE": "too_large",
    "CHANNEL_FULL": "channel_full",
    "NO_PORTS": "no_ports",  # (1.1) reaching the server from real networks
    "INTERNAL": "internal",
}


# --- error codes ------------------------------------------------------------------


def test_error_codes_are_unique():
    assert len(set(protocol.ERROR_CODES)) == len(protocol.ERROR_CODES)


def test_error_codes_are_exactly_the_contracts():
    assert set(protocol.ERROR_CODES) == set(CONTRACT_CODES.values())


@pytest.mark.parametrize(("name", "value"), sorted(CONTRACT_CODES.items()))
def test_error_code_constant_has_contract_value(name, value):
    assert getattr(protocol, name) == value


@pytest.mark.parametrize("name", sorted(CONTRACT_CODES))
def test_signaling_exports_the_same_error_code(name):
    assert getattr(server_protocol, name) == getattr(protocol, name)
    assert name in server_protocol.__all__


def test_signaling_error_codes_are_the_contracts():
    assert server_protocol.ERROR_CODES == protocol.ERROR_CODES


# --- close codes ------------------------------------------------------------------

CLOSE_CODES = {
    "NORMAL": 1000,
    "GOING_AWAY": 1001,
    "TOO_BIG": 1009,
    "REPLACED": 4001,
    "UNAUTHORIZED": 4401,
    "FORBIDDEN": 4403,
    "TIMEOUT": 4408,
    "RATE_LIMITED": 4429,
    "TRY_AGAIN_LATER": 1013,  # (1.1) draining
    "RESUME_REFUSED": 4410,  # (1.1) resuming
    "KICKED": 4003,  # (1.1) moderation
    "MEDIA_LOST": 1011,  # (1.1) workers and nodes
}


@pytest.mark.parametrize(("name", "value"), sorted(CLOSE_CODES.items()))
def test_close_code_has_contract_value(name, value):
    assert protocol.Close[name] == value
    assert int(protocol.Close[name]) == value


def test_close_codes_are_exactly_the_contracts():
    assert {c.name: c.value for c in protocol.Close} == CLOSE_CODES


def test_signaling_close_is_the_contracts():
    assert server_protocol.Close is protocol.Close


# --- channel ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel", ["a", "Z", "7", "general", "team.voice:1", "a-b_c.d:e", "a" * 64]
)
def test_channel_id_accepts(channel):
    assert protocol.CHANNEL_ID.match(channel)


@pytest.mark.parametrize(
    "channel",
    ["", "-a", "_a", ".a", ":a", "a" * 65, "a b", "a/b", "a#b", "ä", "a\u200b", "\na"],
    ids=repr,
)
def test_channel_id_refuses(channel):
    assert not protocol.CHANNEL_ID.match(channel)


def test_channel_id_refuses_trailing_newline():
    assert not protocol.CHANNEL_ID.match("general\n")


# --- message types ----------------------------------------------------------------


def _literal_type(typed_dict: type) -> str:
    (value,) = typing.get_args(typing.get_type_hints(typed_dict)["type"])
    return value


def test_signaling_parses_every_client_message_type():
    client_types = {_literal_type(t) for t in typing.get_args(protocol.ClientMessage)}
    assert client_types == set(server_protocol.PARSERS)


def test_server_message_types_are_unique():
    types = [_literal_type(t) for t in typing.get_args(protocol.ServerMessage)]
    assert len(types) == len(set(types)) == 13  # (1.1): resumed, draining


@pytest.mark.parametrize(
    ("alias", "values"),
    [
        (protocol.Kind, protocol.KINDS),
        (protocol.Source, protocol.SOURCES),
        (protocol.Pc, protocol.PCS),
    ],
    ids=["kinds", "sources", "pcs"],
)
def test_literal_aliases_match_value_tuples(alias, values):
    assert typing.get_args(alias) == values


def test_client_message_id_is_optional():
    assert "id" in protocol.JoinMessage.__optional_keys__
    assert "id" not in protocol.JoinMessage.__required_keys__


# --- builders produce the contract's shapes ---------------------------------------


def _check_shape(value: dict, typed_dict: type) -> None:
    assert set(value) == set(typed_dict.__required_keys__)
    hints = typing.get_type_hints(typed_dict)
    for key, item in value.items():
        hint = hints[key]
        if hint in (str, bool, float, int):
            assert type(item) is hint, (key, item)


def test_participant_info_has_the_contracts_keys():
    view = ParticipantView(
        peer_id="p1",
        user_id="u1",
        name="Alice",
        tracks=[TrackView("microphone", False), TrackView("screen", True)],
    )
    info = messages.participant_info(view)
    _check_shape(info, protocol.ParticipantInfo)
    for track in info["tracks"]:
        _check_shape(track, protocol.TrackState)
    assert info == {
        "peer_id": "p1",
        "user_id": "u1",
        "name": "Alice",
        "tracks": [
            {"source": "microphone", "muted": False},
            {"source": "screen", "muted": True},
        ],
    }


def test_participant_info_without_tracks_has_empty_list():
    info = messages.participant_info(ParticipantView("p", "u", "n"))
    _check_shape(info, protocol.ParticipantInfo)
    assert info["tracks"] == []


def test_track_info_has_the_contracts_keys_and_drops_others():
    tracks = {
        "0": {"peer_id": "p1", "source": "microphone", "kind": "audio"},
        "1": {"peer_id": "p2", "source": "screen", "extra": "x"},
    }
    info = messages.track_info(tracks)
    assert set(info) == {"0", "1"}
    for value in info.values():
        _check_shape(value, protocol.TrackInfo)
    assert info["1"] == {"peer_id": "p2", "source": "screen"}


def test_error_builder_has_the_contracts_keys():
    built = server_protocol.error(protocol.FORBIDDEN, "no", 3)
    assert set(built) == set(protocol.Error.__required_keys__)
    assert built["type"] == _literal_type(protocol.Error)
