"""Errors the media core raises for bad client input; ``code`` is the contract's."""

from __future__ import annotations


class MediaError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadSdp(MediaError):
    code = "bad_sdp"


class BadRequest(MediaError):
    code = "bad_message"


class ChannelFull(MediaError):
    code = "channel_full"


class Forbidden(MediaError):
    code = "forbidden"
