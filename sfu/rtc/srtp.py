"""libsrtp as the fast path uses it: called directly on a shared buffer, and a
sending session per SSRC keyed as aiortc keys its own."""

from __future__ import annotations

from typing import Any

import pylibsrtp
import pylibsrtp._binding
from aiortc.rtcdtlstransport import RTCDtlsTransport
from pylibsrtp import Policy, Session

PROTECT_MAX = 1500  # the largest RTP packet the fast path protects (an MTU)

_ffi = pylibsrtp._binding.ffi
srtp_protect = pylibsrtp._binding.lib.srtp_protect
srtp_protect_rtcp = pylibsrtp._binding.lib.srtp_protect_rtcp
_srtp_unprotect = pylibsrtp._binding.lib.srtp_unprotect


def address(pointer: Any) -> int:
    """A C pointer (libsrtp's ``srtp_t``) as an integer, for the C fast path."""
    return int(_ffi.cast("uintptr_t", pointer))


def session_of(session: Session) -> Any:
    """A pylibsrtp session's ``srtp_t``."""
    return session._srtp[0]


class SrtpScratch:
    """The buffer libsrtp protects and unprotects in, in place, shared by every
    session: the event loop runs one packet at a time and each use ends (its
    result copied or sent) before the next begins. Calling libsrtp directly
    skips pylibsrtp's wrappers, which allocate and check per packet and cost
    more than the cipher; one buffer for all keeps the per-packet path's
    memory small."""

    def __init__(self) -> None:
        self.cdata = _ffi.new("char[]", PROTECT_MAX + pylibsrtp.SRTP_MAX_TRAILER_LEN)
        self.buffer = _ffi.buffer(self.cdata)
        self.view = memoryview(self.buffer)
        self.length = _ffi.new("int *")

    def protect(
        self, session: Any, data: bytes, protect: Any = srtp_protect
    ) -> memoryview | None:
        """``data`` protected by ``session`` (an ``srtp_t``), valid until the
        next use; None if it is too long or libsrtp refuses it. ``protect`` is
        libsrtp's function (``srtp_protect_rtcp`` for SRTCP)."""
        size = len(data)
        if size > PROTECT_MAX:
            return None
        self.buffer[0:size] = data
        self.length[0] = size
        if protect(session, self.cdata, self.length):
            return None
        return self.view[: self.length[0]]

    def unprotect(self, session: Any, data: bytes) -> bytes | None:
        """``data`` authenticated and decrypted, or None (too long, replayed,
        forged)."""
        size = len(data)
        if size > len(self.buffer):
            return None
        self.buffer[0:size] = data
        self.length[0] = size
        if _srtp_unprotect(session, self.cdata, self.length):
            return None
        return self.buffer[0 : self.length[0]]


SCRATCH = SrtpScratch()


def own_session(dtls: RTCDtlsTransport, ssrc: int) -> Session:
    """An SRTP session for ``ssrc``'s RTP alone, keyed as aiortc keyed the
    transport's sending session (RFC 5764 4.2: the same keying material,
    exported again from the DTLS session). libsrtp looks every packet's SSRC up
    in its session's list of streams, which in a session shared by 15 senders
    cost about 1 µs per packet, cold in cache; here it is the only stream. Only
    this session ever protects that SSRC's RTP, and C never gives it one index
    for two different packets (``struct fan_downlink``), so no keystream is used
    twice; SRTCP has keys of its own and stays in aiortc's session, like RTX."""
    ssl = dtls._ssl
    assert ssl is not None, "keyed once DTLS is up"
    selected = ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
    material = ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
    )
    key = profile.get_key_and_salt(material, 1 if dtls._role == "server" else 0)
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_SPECIFIC,
        ssrc_value=ssrc,
        srtp_profile=profile.libsrtp_profile,
    )
    # a NACK resends an index, byte for byte; C refuses any other repeat
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)
