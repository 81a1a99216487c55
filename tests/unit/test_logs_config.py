"""Categorised logging and configuration."""

import contextvars
import io
import json
import logging

import pytest

from diagnostics import logs
from signaling import auth, cli, config


@pytest.fixture
def capture():
    stream = io.StringIO()
    yield stream
    logs.configure(["info"])


def test_levels_per_category_and_emoji(capture):
    logs.configure(["warning", "websocket=debug"], stream=capture)
    logs.get("websocket").debug("socket opened")
    logs.get("voice").info("not shown")
    logs.get("voice").warning("jitter high")
    logs.success(logs.get("screen"), "not shown either")
    logs.get("stats").error("collector failed")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 3
    assert "🔔 socket opened" in lines[0] and "DEBUG" in lines[0]
    assert "🎙️ ⚠️ jitter high" in lines[1]
    assert "📊 ❌ collector failed" in lines[2]


def test_success_marker_and_json_format(capture):
    logs.configure(["info"], fmt="json", stream=capture)
    logs.success(logs.get("voice"), "peer %s connected", "abc")
    entry = json.loads(capture.getvalue())
    assert entry["category"] == "voice" and entry["emoji"] == "🎙️"
    assert entry["status"] == "success" and entry["msg"] == "peer abc connected"


def test_json_lines_carry_whom_they_are_about_as_fields(capture):
    logs.configure(["info"], fmt="json", stream=capture)

    def session() -> None:  # what a socket's session does, in its own context
        logs.about(socket="s1")
        logs.about(user_id="alice", channel="general", peer_id="p1", name=None)
        logs.get("voice").info("published")

    contextvars.copy_context().run(session)
    logs.get("voice").info("elsewhere")
    about, elsewhere = map(json.loads, capture.getvalue().splitlines())
    assert {k: about[k] for k in ("socket", "user_id", "channel", "peer_id")} == {
        "socket": "s1",
        "user_id": "alice",
        "channel": "general",
        "peer_id": "p1",
    }
    assert "name" not in about and "peer_id" not in elsewhere


def test_tokens_and_secret_are_never_logged(capture):
    secret = "super-secret-value-that-is-long-enough"
    token = auth.issue(secret, "alice", ["*"])
    logs.configure(["debug"], secrets=[secret], stream=capture)
    logs.get("websocket").info("join with %s", token)
    logs.get("debug").info("secret is " + secret)
    out = capture.getvalue()
    assert token not in out and secret not in out
    assert "<token>" in out and "<secret>" in out


def test_bad_level_is_refused():
    with pytest.raises(ValueError):
        logs.parse_levels(["websocket=loud"])
    with pytest.raises(ValueError):
        logs.parse_levels(["nosuchcategory=debug"])
    assert logs.parse_levels(["info,voice=debug"]) == {
        "miscord": logging.INFO,
        "miscord.voice": logging.DEBUG,
    }


def test_flags_win_over_environment_over_defaults():
    args = cli.parser().parse_args(
        [
            "serve",
            "--port",
            "9000",
            "--log-level",
            "websocket=debug",
            "--ice-host",
            "10.0.0.1",
        ]
    )
    env = {
        "SFU_PORT": "7000",
        "SFU_HEARTBEAT_INTERVAL": "2.5",
        "SFU_ICE_HOSTS": "127.0.0.1, ::1",
        "SFU_LOG_LEVEL": "debug",
    }
    settings = config.from_sources(args, env)
    assert settings.port == 9000 and settings.heartbeat_interval == 2.5
    assert settings.ice_hosts == ["10.0.0.1"] and settings.log_level == [
        "websocket=debug"
    ]
    from_env = config.from_sources(cli.parser().parse_args(["serve"]), env)
    assert from_env.port == 7000 and from_env.ice_hosts == ["127.0.0.1", "::1"]
    assert config.from_sources(None, {}).port == 8080


def test_ice_hosts_and_dev_login_follow_the_bind():
    loopback = config.Settings()
    assert loopback.ice_hosts == ["127.0.0.1"] and loopback.dev_login
    public = config.Settings(host="0.0.0.0")
    assert public.ice_hosts == [] and not public.dev_login
    assert not config.Settings(secret="given-and-at-least-thirty-two-bytes").dev_login
    assert config.Settings(host="::1").loopback


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        config.Settings(forwarding="carrier-pigeon")
    with pytest.raises(SystemExit):
        config.from_sources(None, {"SFU_PORT": "eighty"})


def test_reference_table_lists_every_setting():
    table = config.reference_table()
    for name in (
        "--heartbeat-interval",
        "SFU_ICE_HOSTS",
        "--media-grace",
        "--forwarding",
    ):
        assert name in table


def test_configuration_doc_is_current():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert config.reference_table() in doc
