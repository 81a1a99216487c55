"""The settings of reaching the server (contract 1.1): the port range and its
pool's accounting, the announced address, TURN URLs and REST credentials."""

from __future__ import annotations

import pytest

from sfu.rtc.ports import PortPool, PortRange, PortsExhausted
from signaling import turn
from signaling.config import Settings

SECRET = "x" * 32


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("40000-49999", 40000, 49999), (" 5-5 ", 5, 5), ("1-65535", 1, 65535)],
)
def test_port_range_parses_lo_hi(text, low, high):
    ports = PortRange.parse(text)
    assert (ports.low, ports.high) == (low, high)
    assert len(ports) == high - low + 1


@pytest.mark.parametrize(
    "text", ["9-1", "0-10", "1-65536", "40000", "a-b", "-5", "1--2", "", "10-"]
)
def test_port_range_refuses_what_is_not_a_range(text):
    with pytest.raises(ValueError, match="LO-HI"):
        PortRange.parse(text)


def test_pool_promises_ports_to_leases_and_takes_them_back():
    pool = PortPool(PortRange(100, 104))
    first = pool.lease(2)
    second = pool.lease(2)
    assert pool.stats() == {"range": "100-104", "size": 5, "reserved": 4, "bound": 0}
    with pytest.raises(PortsExhausted, match="100-104"):
        pool.lease(2)
    first.close()
    first.close()  # idempotent
    assert pool.reserved == 2
    pool.lease(3)
    second.close()
    assert pool.reserved == 3


def test_pool_reuses_a_given_back_port_last():
    pool = PortPool(PortRange(100, 102))
    port = pool._take()
    pool._give(port)
    assert [pool._take() for _ in range(3)] == [101, 102, 100]


def settings(**values) -> Settings:
    return Settings(secret=SECRET, **values)


@pytest.mark.parametrize(
    ("values", "name", "text"),
    [
        ({"rtc_ports": "2-1"}, "rtc_ports", "LO-HI"),
        ({"rtc_ports": "70000-70001"}, "rtc_ports", "65535"),
        ({"announced_ip": "example.org"}, "announced_ip", "not an IP address"),
        ({"announced_ip": "0.0.0.0"}, "announced_ip", "one address"),
        ({"ice_hosts": ["localhost"]}, "ice_hosts", "not an IP address"),
        ({"ice_hosts": ["0.0.0.0"]}, "ice_hosts", "--announced-ip"),
        (
            {"ice_hosts": ["::1"], "announced_ip": "203.0.113.5"},
            "announced_ip",
            "IPv4",
        ),
        ({"turn_urls": ["turn:t.example.org"]}, "turn_secret", "shared secret"),
        ({"turn_urls": ["https://t.example.org"]}, "turn_urls", "not a STUN"),
        (
            {"turn_urls": ["stun:t.example.org?transport=udp"]},
            "turn_urls",
            "only TURN",
        ),
        (
            {"turn_urls": ["turn:t.example.org:99999"], "turn_secret": "s"},
            "turn_urls",
            "out of range",
        ),
        ({"turn_ttl": 0}, "turn_ttl", "more than 0"),
    ],
)
def test_bad_reachability_settings_name_the_setting(values, name, text):
    with pytest.raises(ValueError) as refused:
        settings(**values)
    message = str(refused.value)
    assert message.startswith(f"{name} (--")
    assert f"SFU_{name.upper()}" in message
    assert text in message


def test_good_reachability_settings_reach_the_media_core():
    s = settings(
        ice_hosts=["0.0.0.0"],
        announced_ip="203.0.113.5",
        rtc_ports="40000-40099",
        turn_urls=["turn:turn.example.org:3478?transport=udp", "stun:[2001:db8::1]"],
        turn_secret="s",
    )
    media = s.media()
    assert media.rtc_ports == PortRange(40000, 40099)
    assert media.ice.announced == "203.0.113.5"
    assert media.ice.hosts == ("0.0.0.0",)
    assert settings().media().rtc_ports is None
    assert settings().media().ice.announced is None


def test_turn_credentials_are_coturns_rest_scheme():
    # openssl dgst -sha1 -hmac turn-secret -binary <<< "1700086400:alice" | base64
    # (without the newline)
    assert turn.credentials("turn-secret", "alice", 86400, 1_700_000_000) == (
        "1700086400:alice",
        "5iY+IeUUagohcNcZFo30lkvz3YM=",
    )


def test_ice_servers_group_stun_apart_from_credentialed_turn():
    urls = [
        "stun:stun.example.org",
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349?transport=tcp",
    ]
    servers = turn.ice_servers(urls, "turn-secret", 60, "bob", now=1000)
    assert servers == [
        {"urls": ["stun:stun.example.org"]},
        {
            "urls": urls[1:],
            "username": "1060:bob",
            "credential": turn.credentials("turn-secret", "bob", 60, 1000)[1],
        },
    ]
    assert turn.ice_servers([], "", 60, "bob") == []
