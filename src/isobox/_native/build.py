"""CFFI build script for isobox's native core (API mode, out of line).

Every ``*.c`` file beside this script is one part of the core; its ``*.h`` says what the
part offers and its ``*.cdef`` twin declares the types and functions Python may call.
Keeping one pair per part lets each grow on its own.  Built by ``pip install .``
(setup.py names this file in ``cffi_modules``).

Constants are not written in the cdefs: each is declared once, in its header, and the
cdef lines that give it to Python (``lib.IB_OP_MOUNT``) are made here from the header
(`header_constants`), with ``...`` for the value, which the compiler fills in.  So a step
or a flag cannot be added, moved or renumbered in C and be missing or wrong in Python.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import List

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
PARTS = sorted(p.stem for p in HERE.glob("*.c") if p.stem != "_core")

# What a header declares as a constant, by the header's own conventions: an object-like
# "#define IB_NAME value" (a function-like macro has "(" right after its name); an enum
# member "IB_NAME," or "IB_NAME = value," at the start of a line; and an entry
# "X(NAME, "text")" of a step list (spawn.h: IB_CHILD_STEPS ...), which the enum there
# turns into IB_STEP_NAME.
_DEFINE = re.compile(r"^#define[ \t]+(IB_\w+)[ \t]+\S", re.M)
_ENUM_MEMBER = re.compile(r"^[ \t]+(IB_\w+)[ \t]*(?:=[^,\n]*)?,", re.M)
_STEP = re.compile(r"^[ \t]+X\((\w+),", re.M)


def header_constants(header: str) -> List[str]:
    """The IB_* constants a part's header declares, in the header's order."""
    found = [(m.start(), m.group(1)) for m in _DEFINE.finditer(header)]
    found += [(m.start(), m.group(1)) for m in _ENUM_MEMBER.finditer(header)]
    found += [(m.start(), "IB_STEP_" + m.group(1)) for m in _STEP.finditer(header)]
    return [name for _, name in sorted(found)]


def cdef(part: str) -> str:
    """The part's cdef, with its header's constants."""
    constants = header_constants((HERE / f"{part}.h").read_text())
    return "\n".join([(HERE / f"{part}.cdef").read_text()] + [f"#define {c} ..." for c in constants])


ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef(part) for part in PARTS))
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
