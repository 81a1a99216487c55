"""Builds ``sfu._fanout_native`` (cffi, API mode) from ``fanout_native.c`` at
install time: ``setup.py`` names this builder in ``cffi_modules``."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent
HEADER = (HERE / "fanout_native.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(HEADER.replace("#include <stdint.h>", ""))
ffibuilder.set_source(
    "sfu._fanout_native",
    '#include "fanout_native.h"',
    sources=[str(HERE / "fanout_native.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"],
)
