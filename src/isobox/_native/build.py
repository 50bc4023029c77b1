"""CFFI build script for isobox's native core (API mode, out of line).

Every ``*.c`` file beside this script is one part of the core; its ``*.cdef`` twin
declares what Python may call. Keeping one pair per part lets each grow on its own.
Built by ``pip install .`` (setup.py names this file in ``cffi_modules``).
"""

from __future__ import annotations

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
PARTS = sorted(p.stem for p in HERE.glob("*.c") if p.stem != "_core")

ffibuilder = FFI()
ffibuilder.cdef("\n".join((HERE / f"{part}.cdef").read_text() for part in PARTS))
ffibuilder.set_source(
    "isobox._native._core",
    "\n".join(f'#include "{part}.h"' for part in PARTS),
    # setuptools refuses absolute source paths; the build runs from the project root.
    sources=[os.path.relpath(HERE / f"{part}.c") for part in PARTS],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
