"""Every server setting, its default, its flag and its environment twin, in one place.

``Settings`` is the single reference (``docs/configuration.md`` is generated from it):
each field's metadata names its help text; the flag is ``--field-name`` and the
environment variable ``SFU_FIELD_NAME``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from diagnostics.settings import DiagnosticsSettings
from sfu.rtc.ports import PortRange
from sfu.settings import MediaSettings

from . import turn

ENV_PREFIX = "SFU_"
#: the shortest secret accepted: HS256 keys shorter than the hash are guessable
MIN_SECRET_BYTES = 32


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Settings:
    host: str = field(default="127.0.0.1", metadata=_help("HTTP bind address"))
    port: int = field(default=8080, metadata=_help("HTTP port"))
    secret: str = field(
        default="",
        metadata=_help(
            "HS256 secret for access tokens, at least 32 bytes (random per start "
            "if empty); prefer --secret-file or the environment: flags show in ps"
        ),
    )
    secret_file: str = field(
        default="",
        metadata=_help("a file whose content (less a final newline) is the secret"),
    )
    ice_hosts: list[str] = field(
        default_factory=list,
        metadata={
            "help": "an address ICE gathers on and announces (repeat; default: "
            "127.0.0.1 on a loopback bind, else every address of the machine)",
            "flag": "--ice-host",
        },
    )
    announced_ip: str = field(
        default="",
        metadata=_help(
            "the address every server ICE candidate names instead of the bound "
            "one (behind 1:1 NAT, or with --ice-host 0.0.0.0)"
        ),
    )
    rtc_ports: str = field(
        default="",
        metadata=_help(
            "LO-HI: the UDP ports media sockets bind to (empty: any); a join that "
            "finds none free gets no_ports"
        ),
    )
    turn_urls: list[str] = field(
        default_factory=list,
        metadata={
            "help": "a TURN or STUN URL handed to clients, e.g. "
            "turn:turn.example.org:3478?transport=udp (repeat)",
            "flag": "--turn-url",
        },
    )
    webhook_urls: list[str] = field(
        default_factory=list,
        metadata={
            "help": "an http(s) URL the server POSTs channel events to, signed with "
            "the secret (repeat)",
            "flag": "--webhook-url",
        },
    )
    turn_secret: str = field(
        default="",
        metadata=_help(
            "the static-auth-secret of a coturn running with use-auth-secret "
            "(needed by TURN URLs)"
        ),
    )
    turn_ttl: float = field(
        default=86400.0, metadata=_help("seconds TURN credentials stay valid")
    )
    log_level: list[str] = field(
        default_factory=lambda: ["info"],
        metadata=_help("log level, globally or per category: websocket=debug"),
    )
    log_format: str = field(default="text", metadata=_help("text or json"))
    join_timeout: float = field(
        default=10.0, metadata=_help("seconds a new socket has to send join (4408)")
    )
    heartbeat_interval: float = field(
        default=15.0, metadata=_help("seconds between WebSocket ping frames")
    )
    heartbeat_timeout: float = field(
        default=45.0,
        metadata=_help(
            "a socket silent this long (no pong, no message) is closed 4408"
        ),
    )
    resume_grace: float = field(
        default=15.0,
        metadata=_help(
            "seconds a voice participant whose socket was lost without leave is "
            "kept for a resume (0: never kept)"
        ),
    )
    drain_timeout: float = field(
        default=30.0,
        metadata=_help(
            "seconds calls may go on after SIGTERM/SIGINT before the rest is "
            "closed with 1001"
        ),
    )
    sweep_interval: float = field(
        default=300.0,
        metadata=_help("seconds between sweeps for stale or inconsistent connections"),
    )
    max_message_bytes: int = field(
        default=256 * 1024, metadata=_help("largest accepted message (too_large)")
    )
    rate_limit: float = field(
        default=50.0, metadata=_help("messages per second allowed per connection")
    )
    rate_burst: int = field(default=100, metadata=_help("burst above the rate"))
    rate_strikes: int = field(
        default=20,
        metadata=_help("rate-limited messages within 10 s before closing with 4429"),
    )
    max_sockets_per_address: int = field(
        default=64,
        metadata=_help("WebSockets one client address may hold (HTTP 429 beyond)"),
    )
    max_unjoined_sockets: int = field(
        default=256,
        metadata=_help("WebSockets not yet joined, server-wide (HTTP 429 beyond)"),
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata={
            "help": "a reverse proxy whose X-Forwarded-For names the client "
            "(repeat); others' headers are ignored",
            "flag": "--trusted-proxy",
        },
    )
    metrics_token: str = field(
        default="",
        metadata=_help("a bearer token /metrics requires (empty: open)"),
    )
    dev_support: bool = field(
        default=False,
        metadata=_help("let the development login issue support tokens too"),
    )
    outbox_limit: int = field(
        default=512,
        metadata=_help("queued outgoing messages before a slow socket is dropped"),
    )
    max_participants: int = field(
        default=99, metadata=_help("voice participants per channel (channel_full)")
    )
    max_channels: int = field(
        default=1000, metadata=_help("voice channels per server (channel_full)")
    )
    max_screens: int = field(
        default=2, metadata=_help("concurrent screen shares per channel")
    )
    media_grace: float = field(
        default=10.0,
        metadata=_help("seconds media may stay failed/disconnected before removal"),
    )
    media_silence: float = field(
        default=4.0,
        metadata=_help("seconds without any packet before media counts disconnected"),
    )
    keyframe_interval: float = field(
        default=1.0, metadata=_help("least seconds between keyframe requests")
    )
    offer_timeout: float = field(
        default=15.0, metadata=_help("seconds a client has to answer a server offer")
    )
    forwarding: str = field(
        default="fast",
        metadata=_help("fast (packet fan-out), track (aiortc senders) or relay"),
    )
    stats_interval: float = field(
        default=2.0, metadata=_help("seconds between getStats samples per peer")
    )
    stats_history: float = field(
        default=300.0, metadata=_help("seconds of stats history kept per peer")
    )
    timeline_retention: float = field(
        default=1800.0, metadata=_help("seconds a departed peer stays diagnosable")
    )
    timeline_max_peers: int = field(
        default=2000, metadata=_help("departed peers kept for diagnosis at most")
    )
    client_stats_bytes: int = field(
        default=16 * 1024, metadata=_help("largest client stats message")
    )
    workers: str = field(
        default="1",
        metadata=_help(
            "worker processes holding the channels' media: N, or auto (one per "
            "core); 1 keeps the media in the server's own process"
        ),
    )
    redis_url: str = field(
        default="",
        metadata=_help(
            "redis://HOST:PORT/DB shared by the nodes of a cluster (empty: one "
            "node, no Redis)"
        ),
    )
    node_url: str = field(
        default="",
        metadata=_help(
            "how other nodes reach this one, e.g. http://10.0.0.5:8080 (default: "
            "http://HOST:PORT)"
        ),
    )
    cluster_lease: float = field(
        default=8.0,
        metadata=_help(
            "seconds a node's claim on its channels outlives its last renewal "
            "(a node that died is forgotten after it)"
        ),
    )

    def __post_init__(self) -> None:
        if self.secret_file and not self.secret:
            try:
                with open(self.secret_file, encoding="utf-8") as f:
                    self.secret = f.read().removesuffix("\n")
            except OSError as exc:
                raise ValueError(f"secret_file: cannot read it: {exc}") from None
        self.secret_generated = not self.secret
        if not self.secret:
            self.secret = secrets.token_urlsafe(32)
        elif len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"secret: {len(self.secret.encode())} bytes; at least "
                f"{MIN_SECRET_BYTES} are needed (e.g. openssl rand -base64 32)"
            )
        if not self.ice_hosts:
            self.ice_hosts = ["127.0.0.1"] if self.loopback else []
        self._check_reachability()
        for name in ("resume_grace", "drain_timeout"):
            if getattr(self, name) < 0:
                raise _bad(name, "must not be negative")
        count = self.worker_count()  # checks it
        if (
            self.rtc_ports
            and count > 1
            and len(PortRange.parse(self.rtc_ports)) < 2 * count
        ):
            raise _bad(
                "rtc_ports", f"each of the {count} workers needs 2 ports at least"
            )
        if self.redis_url and not re.fullmatch(r"rediss?://\S+", self.redis_url):
            raise _bad("redis_url", f"{self.redis_url!r} is not a redis:// URL")
        if self.node_url and not re.fullmatch(r"https?://[^\s/]+/?", self.node_url):
            raise _bad("node_url", f"{self.node_url!r} is not http(s)://HOST:PORT")
        if not 1 <= self.cluster_lease <= 30:
            raise _bad("cluster_lease", "must be 1 to 30 seconds")
        if self.forwarding not in ("fast", "track", "relay"):
            raise ValueError("forwarding must be fast, track or relay")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")

    def _check_reachability(self) -> None:
        """The ICE and TURN settings: addresses, the port range, TURN URLs."""
        for host in self.ice_hosts:
            address = _address("ice_hosts", host)
            if address.is_unspecified and not self.announced_ip:
                raise _bad(
                    "ice_hosts",
                    f"{host} binds to every address but names none: give "
                    "--announced-ip, the address clients reach",
                )
        if self.announced_ip:
            announced = _address("announced_ip", self.announced_ip)
            if announced.is_unspecified:
                raise _bad("announced_ip", "must name one address clients reach")
            for host in self.ice_hosts:
                if _address("ice_hosts", host).version != announced.version:
                    raise _bad(
                        "announced_ip",
                        f"IPv{announced.version}, but ice host {host} is not",
                    )
        if self.rtc_ports:
            try:
                PortRange.parse(self.rtc_ports)
            except ValueError as exc:
                raise _bad("rtc_ports", str(exc)) from None
        for url in self.webhook_urls:
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
                raise _bad("webhook_urls", f"{url!r} is not an http(s) URL")
        for url in self.turn_urls:
            try:
                needs_secret = turn.check_url(url)
            except ValueError as exc:
                raise _bad("turn_urls", str(exc)) from None
            if needs_secret and not self.turn_secret:
                raise _bad(
                    "turn_secret",
                    f"{url} needs the TURN server's shared secret (--turn-secret)",
                )
        if not self.turn_ttl > 0:
            raise _bad("turn_ttl", "must be more than 0 seconds")

    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for (``auto``: the cores)."""
        if self.workers == "auto":
            return os.cpu_count() or 1
        if not self.workers.isdigit() or not 1 <= int(self.workers) <= 64:
            raise _bad("workers", f"{self.workers!r}: give 1 to 64, or auto")
        return int(self.workers)

    @property
    def front(self) -> bool:
        """Whether this process only fronts worker processes (and a cluster)."""
        return self.worker_count() > 1 or bool(self.redis_url)

    @property
    def own_url(self) -> str:
        """This node's URL for other nodes (``node_url``, or the bind)."""
        return (self.node_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def loopback(self) -> bool:
        """The HTTP server binds to a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def dev_login(self) -> bool:
        """The web page may offer a development login: loopback and no secret."""
        return self.loopback and self.secret_generated

    def diagnostics(self) -> DiagnosticsSettings:
        return DiagnosticsSettings(
            stats_interval=self.stats_interval,
            stats_history=self.stats_history,
            timeline_retention=self.timeline_retention,
            timeline_max_peers=self.timeline_max_peers,
            client_stats_bytes=self.client_stats_bytes,
        )

    def media(self) -> MediaSettings:
        return MediaSettings(
            ice_hosts=list(self.ice_hosts),
            announced_ip=self.announced_ip or None,
            rtc_ports=PortRange.parse(self.rtc_ports) if self.rtc_ports else None,
            max_participants=self.max_participants,
            max_channels=self.max_channels,
            max_screens=self.max_screens,
            media_grace=self.media_grace,
            media_silence=self.media_silence,
            keyframe_interval=self.keyframe_interval,
            offer_timeout=self.offer_timeout,
            forwarding=self.forwarding,
        )


def _bad(name: str, text: str) -> ValueError:
    """A bad setting, named as its flag and environment variable."""
    return ValueError(f"{name} ({_flag(name)}, {env_name(name)}): {text}")


def _address(name: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _bad(name, f"{text!r} is not an IP address") from None


def _flag(name: str) -> str:
    meta = next(f.metadata for f in fields(Settings) if f.name == name)
    return str(meta.get("flag", "--" + name.replace("_", "-")))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "0": False,
    "false": False,
    "no": False,
}


def _convert(kind: Any, raw: str, name: str) -> Any:
    if kind is list or str(kind).startswith("list"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if str(kind) == "bool":
        if raw.strip().lower() not in BOOLEANS:
            raise SystemExit(f"{env_name(name)}: {raw!r} is not true or false")
        return BOOLEANS[raw.strip().lower()]
    caster = {"int": int, "float": float}.get(str(kind), str)
    try:
        return caster(raw)
    except ValueError:
        raise SystemExit(f"{env_name(name)}: cannot read {raw!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="a TOML file of settings, keys named like the environment variables "
        "without SFU_, lower-case (`miscord-sfu config-sample` prints one) "
        f"[{CONFIG_ENV}]",
    )
    for f in fields(Settings):
        kind = str(f.type)
        default = f.default if not callable(f.default_factory) else f.default_factory()
        help_text = f"{f.metadata['help']} [{env_name(f.name)}; default {default!r}]"
        if kind.startswith("list"):
            parser.add_argument(
                _flag(f.name), action="append", dest=f.name, help=help_text
            )
        elif kind == "bool":
            parser.add_argument(
                _flag(f.name),
                action="store_const",
                const=True,
                dest=f.name,
                help=help_text,
            )
        else:
            caster = {"int": int, "float": float}.get(kind, str)
            parser.add_argument(_flag(f.name), type=caster, dest=f.name, help=help_text)


CONFIG_ENV = ENV_PREFIX + "CONFIG"


def from_sources(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Flags win over the environment, which wins over the config file
    (``--config``, ``SFU_CONFIG``), which wins over the defaults. The whole
    file is checked, even keys something else overrides."""
    env = os.environ if env is None else env
    path = getattr(args, "config", None) or env.get(CONFIG_ENV)
    values: dict[str, Any] = read_file(path) if path else {}
    for f in fields(Settings):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
        elif env_name(f.name) in env:
            values[f.name] = _convert(f.type, env[env_name(f.name)], f.name)
    return Settings(**values)


#: what a TOML value of each setting type may be (a float setting takes an
#: integer too; TOML's booleans are not integers here)
TOML_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}


def read_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file, each key and value checked: an unknown key
    or a value of the wrong type is a ValueError naming the key and the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: not TOML: {exc}") from None
    known = {f.name: str(f.type) for f in fields(Settings)}
    for key, value in data.items():
        kind = known.get(key)
        if kind is None:
            raise ValueError(
                f"config file {path}: unknown key {key!r} (keys are the "
                "environment variables without SFU_, lower-case)"
            )
        if kind.startswith("list"):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            allowed = TOML_TYPES[kind]
            ok = isinstance(value, allowed) and (
                bool in allowed or not isinstance(value, bool)
            )
        if not ok:
            raise ValueError(
                f"config file {path}: {key} = {value!r}: needs {_toml_kind(kind)}"
            )
    return dict(data)


def _toml_kind(kind: str) -> str:
    if kind.startswith("list"):
        return "a list of strings"
    return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
        kind, "a string"
    )


def config_sample() -> str:
    """A complete config file: every setting with its meaning beside it, at
    its default; settings without one (empty) commented out."""
    lines = [
        "# miscord-sfu settings (serve --config FILE.toml, or SFU_CONFIG).",
        "# Precedence: flags, then SFU_* environment variables, then this file.",
        "",
    ]
    for f in fields(Settings):
        default = f.default if not callable(f.default_factory) else f.default_factory()
        if isinstance(default, bool):
            value = "true" if default else "false"
        else:
            value = json.dumps(default)
        commented = "# " if default in ("", []) else ""
        lines += [f"# {f.metadata['help']}", f"{commented}{f.name} = {value}", ""]
    return "\n".join(lines)


def reference_table(rows: Sequence[str] = ()) -> str:
    """A Markdown table of every setting (docs/configuration.md)."""
    lines = list(rows) or [
        "| flag | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for f in fields(Settings):
        default = f.default if not callable(f.default_factory) else f.default_factory()
        lines.append(
            f"| `{_flag(f.name)}` | `{env_name(f.name)}` | `{default!r}` | "
            f"{f.metadata['help']} |"
        )
    return "\n".join(lines) + "\n"
