"""The fast path in C (``fanout.c``, built at install by ``build.py`` through
cffi): ``ffi`` and ``lib``. It protects and unprotects SRTP through
pylibsrtp's own libsrtp, whose entry points it is handed here, so the process
holds one copy of libsrtp and one set of keys."""

import pylibsrtp._binding

from ._fanout import ffi, lib

_srtp = pylibsrtp._binding


def _address(name: str) -> int:
    return int(_srtp.ffi.cast("uintptr_t", _srtp.ffi.addressof(_srtp.lib, name)))


lib.fan_init(
    _address("srtp_protect"),
    _address("srtp_unprotect"),
    _address("srtp_unprotect_rtcp"),
)

__all__ = ["ffi", "lib"]
