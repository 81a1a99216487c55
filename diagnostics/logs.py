"""Categorised logging: one standard logger per category, an emoji per category.

Every module logs through ``logging.getLogger(category_logger("voice"))`` (or the
``LOG`` shortcuts below), so levels can be set per category from the command line
(``--log-level websocket=DEBUG``) and the environment (``SFU_LOG_LEVEL``). The
``sfu`` package uses the same logger names without importing this module.

Tokens and the server secret never reach a log line: a filter redacts anything
that looks like a JWT and the configured secret.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable

ROOT = "miscord"

#: category -> emoji, as in the write-up the project started from.
CATEGORIES: dict[str, str] = {
    "websocket": "🔔",
    "voice": "🎙️",
    "screen": "🖥️",
    "stats": "📊",
    "debug": "🔧",
}
STATUS_EMOJI = {"error": "❌", "warning": "⚠️", "success": "✅"}

_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+")


def category_logger(category: str) -> str:
    """The logger name of a category (``miscord.voice``)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown log category {category!r}")
    return f"{ROOT}.{category}"


def get(category: str) -> logging.Logger:
    return logging.getLogger(category_logger(category))


def success(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log an INFO line marked ✅ (a connection up, a negotiation done)."""
    logger.info(msg, *args, extra={"success": True})


class RedactFilter(logging.Filter):
    """Replace JWTs and the secret in the rendered message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = _JWT.sub("<token>", text)
        for secret in self._secrets:
            clean = clean.replace(secret, "<secret>")
        if clean != text:
            record.msg, record.args = clean, None
        return True


def _category_of(record: logging.LogRecord) -> str:
    parts = record.name.split(".")
    if len(parts) >= 2 and parts[0] == ROOT and parts[1] in CATEGORIES:
        return parts[1]
    return "debug"


def _status_of(record: logging.LogRecord) -> str | None:
    if record.levelno >= logging.ERROR:
        return "error"
    if record.levelno >= logging.WARNING:
        return "warning"
    if getattr(record, "success", False):
        return "success"
    return None


class EmojiFormatter(logging.Formatter):
    """``2026-11-26 10:00:00 INFO 🎙️ ✅ peer abc connected``."""

    def format(self, record: logging.LogRecord) -> str:
        category = _category_of(record)
        status = _status_of(record)
        prefix = CATEGORIES[category] + (f" {STATUS_EMOJI[status]}" if status else "")
        text = f"{prefix} {record.getMessage()}"
        stamp = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


#: who the lines logged in this task are about (``about``): JSON log fields
SUBJECT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "miscord_log_subject", default=None
)


def about(**ids: str | None) -> None:
    """Name the socket, user, channel and peer every line logged from now on
    in this task (and the tasks it starts) is about: in the JSON format they
    are fields of their own, for a log shipper to filter on."""
    SUBJECT.set({**(SUBJECT.get() or {}), **{k: v for k, v in ids.items() if v}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers, with the ids ``about``
    named as fields."""

    def format(self, record: logging.LogRecord) -> str:
        category = _category_of(record)
        status = _status_of(record)
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "category": category,
            "emoji": CATEGORIES[category],
            "msg": record.getMessage(),
            "logger": record.name,
            **(SUBJECT.get() or {}),
        }
        if status:
            entry["status"] = status
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def parse_levels(specs: Iterable[str]) -> dict[str, int]:
    """Parse ``["info", "websocket=debug,voice=warning"]`` into logger -> level.

    A bare level applies to every category; ``category=level`` to one.
    """
    levels: dict[str, int] = {}
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, _, level = item.rpartition("=")
            value = logging.getLevelName(level.upper())
            if not isinstance(value, int):
                raise ValueError(f"unknown log level {level!r}")
            levels[category_logger(name) if name else ROOT] = value
    return levels


def configure(
    levels: Iterable[str] = ("info",),
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: object = None,
) -> None:
    """Install the handler on the ``miscord`` root logger (idempotent)."""
    root = logging.getLogger(ROOT)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter() if fmt == "json" else EmojiFormatter())
    handler.addFilter(RedactFilter(secrets))
    root.addHandler(handler)
    root.propagate = False
    parsed = parse_levels(levels)
    root.setLevel(parsed.pop(ROOT, logging.INFO))
    for name in CATEGORIES:
        logging.getLogger(category_logger(name)).setLevel(logging.NOTSET)
    for name, level in parsed.items():
        logging.getLogger(name).setLevel(level)
