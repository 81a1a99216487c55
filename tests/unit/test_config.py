"""``signaling.config``: ``Settings`` defaults and validation, ``from_sources``
(flags over environment over defaults, through the module's own
``add_arguments``), environment conversions, the secret and its file, the
properties that follow the bind address, the media/diagnostics settings it
fills, and the reference table."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

import pytest

from diagnostics.settings import DiagnosticsSettings
from sfu.settings import MediaSettings
from signaling.config import (
    MIN_SECRET_BYTES,
    Settings,
    add_arguments,
    config_sample,
    env_name,
    from_sources,
    reference_table,
)

SECRET = "k" * MIN_SECRET_BYTES


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# --- defaults ---------------------------------------------------------------------


def test_defaults():
    s = Settings()
    assert (s.host, s.port, s.log_format, s.forwarding) == (
        "127.0.0.1",
        8080,
        "text",
        "fast",
    )
    assert s.log_level == ["info"]
    assert s.trusted_proxies == []
    assert (s.rate_limit, s.rate_burst, s.rate_strikes) == (50.0, 100, 20)
    assert s.max_message_bytes == 256 * 1024
    assert s.dev_support is False


def test_no_secret_generates_a_random_one():
    a, b = Settings(), Settings()
    assert a.secret_generated and b.secret_generated
    assert len(a.secret.encode()) >= MIN_SECRET_BYTES
    assert a.secret != b.secret


def test_list_defaults_are_not_shared():
    a, b = Settings(), Settings()
    a.log_level.append("websocket=debug")
    assert b.log_level == ["info"]


def test_from_sources_without_flags_or_env_is_the_defaults():
    s = from_sources(None, {})
    d = Settings()
    for f in fields(Settings):
        if f.name != "secret":
            assert getattr(s, f.name) == getattr(d, f.name), f.name


def test_parsed_empty_command_line_leaves_every_field_to_env_or_default():
    args = flags()
    assert all(getattr(args, f.name) is None for f in fields(Settings))


# --- precedence -------------------------------------------------------------------


def test_flag_wins_over_env():
    s = from_sources(flags("--port", "9000"), {"SFU_PORT": "7000"})
    assert s.port == 9000


def test_env_wins_over_default():
    s = from_sources(flags(), {"SFU_PORT": "7000", "SFU_MAX_SCREENS": "3"})
    assert (s.port, s.max_screens) == (7000, 3)


def test_flags_env_and_defaults_combine():
    s = from_sources(
        flags("--rate-limit", "5.5"),
        {"SFU_RATE_LIMIT": "1", "SFU_RATE_BURST": "7"},
    )
    assert (s.rate_limit, s.rate_burst, s.rate_strikes) == (5.5, 7, 20)


def test_repeated_list_flag_wins_over_env_list():
    s = from_sources(
        flags("--ice-host", "10.0.0.1", "--ice-host", "10.0.0.2"),
        {"SFU_ICE_HOSTS": "192.168.0.1"},
    )
    assert s.ice_hosts == ["10.0.0.1", "10.0.0.2"]


def test_trusted_proxy_flag_is_singular():
    s = from_sources(flags("--trusted-proxy", "10.1.1.1"), {})
    assert s.trusted_proxies == ["10.1.1.1"]


def test_bool_flag_wins_over_env():
    assert from_sources(flags("--dev-support"), {"SFU_DEV_SUPPORT": "no"}).dev_support


def test_env_not_prefixed_is_ignored():
    assert from_sources(flags(), {"PORT": "1", "port": "2"}).port == 8080


def test_flag_value_of_wrong_type_exits():
    with pytest.raises(SystemExit):
        flags("--port", "eighty")


# --- environment conversions ------------------------------------------------------


def test_env_list_is_split_on_commas_and_trimmed():
    s = from_sources(None, {"SFU_TRUSTED_PROXIES": "a, b,,c"})
    assert s.trusted_proxies == ["a", "b", "c"]


def test_env_log_level_list():
    s = from_sources(None, {"SFU_LOG_LEVEL": "debug, websocket=info"})
    assert s.log_level == ["debug", "websocket=info"]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" Yes ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("False", False),
    ],
)
def test_env_bool(raw, value):
    assert from_sources(None, {"SFU_DEV_SUPPORT": raw}).dev_support is value


@pytest.mark.parametrize("raw", ["maybe", "", "2", "on"])
def test_env_bad_bool_exits_naming_the_variable(raw):
    with pytest.raises(SystemExit) as info:
        from_sources(None, {"SFU_DEV_SUPPORT": raw})
    assert "SFU_DEV_SUPPORT" in str(info.value.code)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SFU_PORT", "eighty"),
        ("SFU_PORT", "1.5"),
        ("SFU_MAX_SCREENS", ""),
        ("SFU_RATE_LIMIT", "fast"),
        ("SFU_JOIN_TIMEOUT", "10s"),
    ],
)
def test_env_bad_number_exits_naming_the_variable(name, raw):
    with pytest.raises(SystemExit) as info:
        from_sources(None, {name: raw})
    assert name in str(info.value.code)
    assert repr(raw) in str(info.value.code)


def test_env_numbers_are_converted():
    s = from_sources(None, {"SFU_PORT": "81", "SFU_JOIN_TIMEOUT": "2.5"})
    assert s.port == 81 and type(s.port) is int
    assert s.join_timeout == 2.5 and type(s.join_timeout) is float


def test_env_name():
    assert env_name("max_message_bytes") == "SFU_MAX_MESSAGE_BYTES"


# --- secret -----------------------------------------------------------------------


def test_secret_shorter_than_32_bytes_is_refused():
    with pytest.raises(ValueError, match="31 bytes"):
        Settings(secret="k" * 31)


def test_secret_is_counted_in_bytes():
    # 16 two-byte characters: 32 bytes
    assert Settings(secret="é" * 16).secret == "é" * 16


def test_given_secret_is_kept():
    s = Settings(secret=SECRET)
    assert s.secret == SECRET
    assert s.secret_generated is False


def test_secret_from_env():
    assert from_sources(None, {"SFU_SECRET": SECRET}).secret == SECRET


def test_secret_file_is_read_without_final_newline(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n", encoding="utf-8")
    s = Settings(secret_file=str(path))
    assert s.secret == SECRET
    assert s.secret_generated is False


def test_secret_file_only_one_final_newline_is_stripped(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n\n", encoding="utf-8")
    assert Settings(secret_file=str(path)).secret == SECRET + "\n"


def test_secret_file_too_short_is_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_text("short\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret_file=str(path))


def test_missing_secret_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="secret_file"):
        Settings(secret_file=str(tmp_path / "absent"))


def test_secret_wins_over_secret_file(tmp_path):
    s = Settings(secret=SECRET, secret_file=str(tmp_path / "absent"))
    assert s.secret == SECRET


# --- bind address -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "::1"])
def test_loopback_hosts(host):
    s = Settings(host=host)
    assert s.loopback
    assert s.ice_hosts == ["127.0.0.1"]
    assert s.dev_login


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_non_loopback_hosts(host):
    s = Settings(host=host)
    assert not s.loopback
    assert s.ice_hosts == []
    assert not s.dev_login


def test_dev_login_needs_a_generated_secret():
    assert not Settings(host="127.0.0.1", secret=SECRET).dev_login


def test_explicit_ice_hosts_are_kept_on_loopback():
    assert Settings(ice_hosts=["10.0.0.5"]).ice_hosts == ["10.0.0.5"]


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize("forwarding", ["fast", "track", "relay"])
def test_forwarding_modes_accepted(forwarding):
    assert Settings(forwarding=forwarding).forwarding == forwarding


@pytest.mark.parametrize("forwarding", ["", "FAST", "sfu"])
def test_bad_forwarding_is_refused(forwarding):
    with pytest.raises(ValueError, match="forwarding"):
        Settings(forwarding=forwarding)


@pytest.mark.parametrize("log_format", ["xml", "", "JSON"])
def test_bad_log_format_is_refused(log_format):
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format=log_format)


def test_bad_forwarding_from_env_is_refused():
    with pytest.raises(ValueError, match="forwarding"):
        from_sources(None, {"SFU_FORWARDING": "turbo"})


# --- derived settings -------------------------------------------------------------


def test_media_copies_the_values():
    s = Settings(
        ice_hosts=["10.0.0.1"],
        max_participants=7,
        max_channels=8,
        max_screens=1,
        media_grace=1.5,
        media_silence=2.5,
        keyframe_interval=0.25,
        offer_timeout=3.0,
        forwarding="track",
    )
    media = s.media()
    assert isinstance(media, MediaSettings)
    assert (
        media.ice_hosts,
        media.max_participants,
        media.max_channels,
        media.max_screens,
        media.media_grace,
        media.media_silence,
        media.keyframe_interval,
        media.offer_timeout,
        media.forwarding,
    ) == (["10.0.0.1"], 7, 8, 1, 1.5, 2.5, 0.25, 3.0, "track")
    # what the config does not name keeps the media core's default
    assert media.connect_timeout == MediaSettings().connect_timeout


def test_media_ice_hosts_is_a_copy():
    s = Settings(ice_hosts=["10.0.0.1"])
    media = s.media()
    s.ice_hosts.append("10.0.0.2")
    assert media.ice_hosts == ["10.0.0.1"]


def test_diagnostics_copies_the_values():
    s = Settings(
        stats_interval=0.5,
        stats_history=60.0,
        timeline_retention=90.0,
        timeline_max_peers=12,
        client_stats_bytes=4096,
    )
    assert s.diagnostics() == DiagnosticsSettings(
        stats_interval=0.5,
        stats_history=60.0,
        timeline_retention=90.0,
        timeline_max_peers=12,
        client_stats_bytes=4096,
    )


# --- reference table --------------------------------------------------------------


def test_reference_table_has_one_row_per_field():
    lines = reference_table().splitlines()
    assert lines[0] == "| flag | environment | default | meaning |"
    assert len(lines) == 2 + len(fields(Settings))
    for f, line in zip(fields(Settings), lines[2:], strict=True):
        assert f"`{env_name(f.name)}`" in line


def test_reference_table_names_flags_and_defaults():
    table = reference_table()
    assert "| `--ice-host` | `SFU_ICE_HOSTS` | `[]` |" in table
    assert "| `--port` | `SFU_PORT` | `8080` |" in table
    assert "| `--log-level` | `SFU_LOG_LEVEL` | `['info']` |" in table


def test_reference_table_with_given_header():
    table = reference_table(["| a | b | c | d |"])
    assert table.splitlines()[0] == "| a | b | c | d |"
    assert len(table.splitlines()) == 1 + len(fields(Settings))


# --- the config file (contract 1.1, "Operating it") ------------------------------


def write(tmp_path, text: str) -> str:
    path = tmp_path / "sfu.toml"
    path.write_text(text)
    return str(path)


def test_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, 'port = 7000\nlog_level = ["debug"]\nmax_channels = 5\n')
    s = from_sources(flags("--config", path), {})
    assert (s.port, s.log_level, s.max_channels) == (7000, ["debug"], 5)
    s = from_sources(flags("--config", path), {"SFU_PORT": "7100"})
    assert (s.port, s.log_level) == (7100, ["debug"])
    s = from_sources(flags("--config", path, "--port", "7200"), {"SFU_PORT": "7100"})
    assert s.port == 7200
    # SFU_CONFIG names the file too
    assert from_sources(None, {"SFU_CONFIG": path}).max_channels == 5


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("prot = 8080\n", "unknown key 'prot'"),
        ('port = "8080"\n', "port = '8080': needs an integer"),
        ("port = true\n", "port = True: needs an integer"),
        ("ice_hosts = [1]\n", "ice_hosts = [1]: needs a list of strings"),
        ('dev_support = "yes"\n', "needs true or false"),
        ("port = \n", "not TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=r"config file .*sfu\.toml") as info:
        from_sources(flags("--config", path), {})
    assert named in str(info.value)


def test_the_whole_file_is_checked_even_what_a_flag_overrides(tmp_path):
    path = write(tmp_path, 'port = "eighty"\n')
    with pytest.raises(ValueError, match="port"):
        from_sources(flags("--config", path, "--port", "9000"), {})


def test_a_value_the_settings_refuse_names_the_setting(tmp_path):
    path = write(tmp_path, "resume_grace = -1\n")
    with pytest.raises(ValueError, match="resume_grace"):
        from_sources(flags("--config", path), {})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere\.toml"):
        from_sources(flags("--config", str(tmp_path / "nowhere.toml")), {})


def test_the_sample_is_complete_and_round_trips(tmp_path):
    sample = config_sample()
    names = [f.name for f in fields(Settings)]
    for name in names:  # every setting, set or commented out, with its meaning
        assert f"\n{name} = " in sample or f"\n# {name} = " in sample, name
    read = from_sources(flags("--config", write(tmp_path, sample)), {})
    defaults = Settings()

    def values(s: Settings) -> dict:  # (an empty secret is a random one per start)
        return {n: getattr(s, n) for n in names if not n.startswith("secret")}

    assert values(read) == values(defaults)
    # the commented-out ones are valid TOML of the right type once uncommented
    uncommented = "\n".join(
        line[2:] if any(line.startswith(f"# {n} = ") for n in names) else line
        for line in sample.splitlines()
    )
    from_sources(flags("--config", write(tmp_path, uncommented)), {})


def test_workers_one_keeps_the_media_in_process():
    settings = Settings()
    assert settings.worker_count() == 1 and not settings.front


@pytest.mark.parametrize("workers", ["0", "65", "two", "-1"])
def test_bad_worker_counts_are_refused_naming_the_setting(workers):
    with pytest.raises(ValueError, match="--workers"):
        Settings(workers=workers)


def test_workers_auto_is_one_per_core():
    settings = Settings(workers="auto")
    assert settings.worker_count() == (os.cpu_count() or 1)


def test_a_redis_url_makes_a_front_even_with_one_worker():
    settings = Settings(redis_url="redis://127.0.0.1:6379/0", port=9000)
    assert settings.front and settings.own_url == "http://127.0.0.1:9000"
    named = Settings(redis_url="redis://r:6379/0", node_url="http://10.0.0.5:8080/")
    assert named.own_url == "http://10.0.0.5:8080"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", "http://127.0.0.1:6379"),
        ("node_url", "10.0.0.5:8080"),
        ("node_url", "http://10.0.0.5:8080/path"),
        ("cluster_lease", 0.5),
        ("cluster_lease", 31.0),
    ],
)
def test_bad_cluster_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})
