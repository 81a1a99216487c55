"""Access tokens: ``miscord_client.tokens.issue`` mints them, ``signaling.auth
.verify`` checks them into ``Claims`` (claims validated one by one), and
``bearer`` reads an HTTP request's ``Authorization`` header (401 otherwise)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from miscord_client.tokens import issue
from signaling import auth
from signaling.auth import AuthError, Claims, bearer, verify

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4  # long enough for HS512
OTHER = "another-secret-0123456789abcdef-xyzw"


def signed(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def soon() -> int:
    return int(time.time()) + 600


def refusal(token: str, secret: str = SECRET) -> str:
    with pytest.raises(AuthError) as info:
        verify(secret, token)
    return str(info.value)


# --- issue / verify ---------------------------------------------------------------


def test_issue_verify_round_trip():
    before = time.time()
    token = issue(SECRET, "alice", ["general", "music"], ttl=120, name="Alice")
    claims = verify(SECRET, token)
    assert claims == Claims(
        user_id="alice",
        name="Alice",
        channels=("general", "music"),
        role="member",
        expires=claims.expires,
    )
    assert int(before + 120) <= claims.expires <= int(time.time() + 120)


def test_issue_support_role_round_trips():
    assert verify(SECRET, issue(SECRET, "bob", ["*"], role="support")).role == "support"


def test_rights_default_to_all_and_are_checked():
    assert verify(SECRET, issue(SECRET, "a", ["*"])).can == {
        "speak",
        "screen",
        "listen",
    }
    listen = verify(SECRET, issue(SECRET, "a", ["*"], can=["listen"]))
    assert listen.can == {"listen"}
    admin = verify(SECRET, issue(SECRET, "a", ["*"], role="admin"))
    assert admin.role == "admin" and admin.support  # support's reading rights
    with pytest.raises(ValueError, match="can"):
        issue(SECRET, "a", ["*"], can=["shout"])


@pytest.mark.parametrize("can", ["speak", ["shout"], [1], {"speak": 1}], ids=repr)
def test_bad_rights_claim_is_refused(can):
    token = signed({"sub": "alice", "can": can, "exp": soon()})
    assert "'can'" in refusal(token)


def test_issue_refuses_unknown_role():
    with pytest.raises(ValueError, match="role"):
        issue(SECRET, "alice", [], role="moderator")


def test_name_defaults_to_user():
    assert verify(SECRET, issue(SECRET, "carol", [])).name == "carol"


def test_empty_name_is_not_issued_and_defaults_to_user():
    token = issue(SECRET, "carol", [], name="")
    assert "name" not in jwt.decode(token, SECRET, algorithms=["HS256"])
    assert verify(SECRET, token).name == "carol"


def test_missing_channels_claim_means_no_channel():
    claims = verify(SECRET, signed({"sub": "dave", "exp": soon()}))
    assert claims.channels == ()
    assert claims.role == "member"
    assert not claims.may_join("general")


def test_expired_token_is_refused():
    assert refusal(issue(SECRET, "alice", ["*"], ttl=-5)) == "token expired"


def test_wrong_secret_is_refused():
    assert refusal(issue(OTHER, "alice", ["*"])).startswith("invalid token")


def test_empty_token_is_missing():
    assert refusal("") == "missing token"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 300])
def test_malformed_token_is_refused(token):
    assert refusal(token).startswith("invalid token")


def test_alg_none_is_refused():
    token = jwt.encode({"sub": "alice", "exp": soon()}, None, algorithm="none")
    assert "alg" in refusal(token)


def test_other_hmac_algorithm_is_refused():
    token = signed({"sub": "alice", "exp": soon()}, alg="HS512")
    assert "alg" in refusal(token)


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_missing_required_claim_is_refused(missing):
    claims = {"sub": "alice", "exp": soon()}
    del claims[missing]
    assert f'"{missing}"' in refusal(signed(claims))


@pytest.mark.parametrize("sub", ["", "x" * 129, 5, None], ids=repr)
def test_bad_sub_is_refused(sub):
    assert refusal(signed({"sub": sub, "exp": soon()})).startswith("invalid token")


def test_sub_of_128_characters_is_accepted():
    assert (
        verify(SECRET, signed({"sub": "u" * 128, "exp": soon()})).user_id == "u" * 128
    )


@pytest.mark.parametrize("name", [5, None, ["a"], "n" * 129], ids=repr)
def test_bad_name_is_refused(name):
    token = signed({"sub": "alice", "name": name, "exp": soon()})
    assert "'name'" in refusal(token)


@pytest.mark.parametrize("role", ["moderator", "", None, "Support"], ids=repr)
def test_bad_role_is_refused(role):
    token = signed({"sub": "alice", "role": role, "exp": soon()})
    assert "role" in refusal(token)


@pytest.mark.parametrize(
    "channels", ["general", ["a", 1], {"a": 1}, [None], 7], ids=repr
)
def test_bad_channels_claim_is_refused(channels):
    token = signed({"sub": "alice", "channels": channels, "exp": soon()})
    assert "'channels'" in refusal(token)


# --- Claims -----------------------------------------------------------------------


def claims(channels: tuple[str, ...], role: str = "member") -> Claims:
    return Claims("u", "n", channels, role, 0)


@pytest.mark.parametrize("channel", ["general", "anything", "x.y:z"])
def test_wildcard_may_join_any_channel(channel):
    assert claims(("*",)).may_join(channel)


def test_listed_channels_only_may_be_joined():
    c = claims(("general", "music"))
    assert c.may_join("general")
    assert c.may_join("music")
    assert not c.may_join("gen")
    assert not c.may_join("*")


def test_no_channels_may_join_nothing():
    assert not claims(()).may_join("general")


@pytest.mark.parametrize(("role", "support"), [("support", True), ("member", False)])
def test_support_property(role, support):
    assert claims((), role).support is support


# --- bearer -----------------------------------------------------------------------


def request(header: str | None) -> web.Request:
    headers = {} if header is None else {"Authorization": header}
    return make_mocked_request("GET", "/api/peers", headers=headers)


def unauthorized(header: str | None) -> dict[str, Any]:
    with pytest.raises(web.HTTPUnauthorized) as info:
        bearer(request(header), SECRET)
    assert info.value.status == 401
    assert info.value.content_type == "application/json"
    return json.loads(info.value.text)


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"],
    ids=["none", "empty", "scheme-only", "scheme-space", "basic", "other-scheme"],
)
def test_bearer_without_bearer_token_is_401(header):
    assert unauthorized(header) == {"error": "missing bearer token"}


def test_bearer_bad_token_is_401_with_reason():
    body = unauthorized("Bearer not-a-jwt")
    assert body["error"].startswith("invalid token")


def test_bearer_expired_token_is_401():
    token = issue(SECRET, "alice", ["*"], ttl=-5)
    assert unauthorized(f"Bearer {token}") == {"error": "token expired"}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_good_token_gives_claims(scheme):
    token = issue(SECRET, "alice", ["general"], role="support", name="Alice")
    claims = bearer(request(f"{scheme} {token}"), SECRET)
    assert (claims.user_id, claims.name, claims.channels, claims.support) == (
        "alice",
        "Alice",
        ("general",),
        True,
    )


def test_bearer_token_surrounding_spaces_are_ignored():
    token = issue(SECRET, "alice", [])
    assert bearer(request(f"Bearer  {token} "), SECRET).user_id == "alice"


def test_a_relay_stamp_names_its_address_only_with_the_secret():
    stamp = auth.relay_stamp(SECRET, "203.0.113.5")
    assert auth.relayed_for(SECRET, stamp) == "203.0.113.5"
    assert auth.relayed_for("x" * 32, stamp) is None
    assert auth.relayed_for(SECRET, stamp.replace("203.0.113.5", "203.0.113.6")) is None
    assert auth.relayed_for(SECRET, "203.0.113.5") is None
    assert auth.relayed_for(SECRET, "") is None
