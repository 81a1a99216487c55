"""Builds ``sfu.native._fanout`` (cffi, API mode) from ``fanout.c`` at install
time: ``setup.py`` names this builder in ``cffi_modules``. With
``MISCORD_SANITIZE=1`` in the environment it is built with AddressSanitizer and
UndefinedBehaviorSanitizer (``scripts/test --sanitize``)."""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent
HEADER = (HERE / "fanout.h").read_text()
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
sanitize = os.environ.get("MISCORD_SANITIZE") == "1"

ffibuilder = FFI()
ffibuilder.cdef(HEADER.replace("#include <stdint.h>", ""))
ffibuilder.set_source(
    "sfu.native._fanout",
    '#include "fanout.h"',
    sources=[str(HERE / "fanout.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=(
        [*WARNINGS, "-O1", "-g", "-fno-omit-frame-pointer", *SANITIZERS]
        if sanitize
        else [*WARNINGS, "-O2"]
    ),
    extra_link_args=SANITIZERS if sanitize else [],
)
