"""The C core's facts have one source each: openat2's flags and struct (fsops.h).
These tests read the sources as text and hold the rest of the code to them."""

from __future__ import annotations

import pathlib
import re

import pytest

from isobox.host.native import lib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "isobox"


@pytest.mark.parametrize("suffix", [".py", ".c", ".h"])
def test_openat2_flags_and_struct_are_defined_only_in_fsops_h(suffix: str) -> None:
    for path in SRC.rglob(f"*{suffix}"):
        if path.name == "fsops.h" or path.name.startswith("_core"):
            continue
        text = path.read_text()
        assert not re.search(r"^\s*_?RESOLVE_\w+\s*=", text, re.M), path  # Python constants
        assert not re.search(r"#define\s+\w*RESOLVE_\w+\s", text), path  # C macros
        assert not re.search(r"struct\s+\w*open_how\s*\{", text), path
    assert lib.IB_RESOLVE_IN_ROOT == 0x10 and lib.IB_RESOLVE_NO_MAGICLINKS == 0x02  # openat2(2)
