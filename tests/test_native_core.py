"""The C core's facts have one source each: the step list (spawn.h's X-macro lists, with
the names errors give the steps), its constants (the headers; the cdefs declare none),
openat2's flags and struct (fsops.h).  These tests read the C sources as text and hold
the compiled core, Python's use of it and spawn.c's code to them."""

from __future__ import annotations

import errno
import pathlib
import re
from typing import Dict, List, Set, Tuple

import pytest

from isobox.errors import SetupError
from isobox.host import native
from isobox.host.native import lib

pytestmark = pytest.mark.unit  # every test here is pure (tests/fixtures/seam.py)

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "isobox"
NATIVE = SRC / "_native"


def _step_lists() -> Dict[str, List[Tuple[str, str]]]:
    """spawn.h's step lists: {"CHILD": [(NAME, "name"), ...], "JOIN": ..., "PARENT": ...,
    "FORWARD": ...}."""
    text = (NATIVE / "spawn.h").read_text()
    lists: Dict[str, List[Tuple[str, str]]] = {}
    for m in re.finditer(r"^#define IB_(\w+)_STEPS\(X\)((?:.*\\\n)*.*)$", text, re.M):
        lists[m.group(1)] = re.findall(r'X\((\w+), "([^"]*)"\)', m.group(2))
    return lists


def _all_steps() -> List[Tuple[str, str]]:
    lists = _step_lists()
    return lists["CHILD"] + lists["JOIN"] + lists["PARENT"] + lists["FORWARD"]


def test_spawn_h_lists_the_steps_of_four_processes() -> None:
    lists = _step_lists()
    assert set(lists) == {"CHILD", "JOIN", "PARENT", "FORWARD"}
    names = [name for name, _ in _all_steps()]
    assert len(names) == len(set(names)) and "EXEC" in names and "SETNS" in names
    texts = [text for _, text in _all_steps()]
    assert all(texts) and len(texts) == len(set(texts))


def test_the_compiled_enum_numbers_the_steps_in_list_order() -> None:
    values = [getattr(lib, f"IB_STEP_{name}") for name, _ in _all_steps()]
    assert values == list(range(1, len(values) + 1))
    assert lib.IB_STEP_NONE == 0 and lib.IB_STEP_PLAN > len(values)


def test_errors_name_each_step_as_spawn_h_does() -> None:
    spec = native.Spec(clone_flags=0)
    special = {"EXEC", "EXEC_CHECK", "CHDIR"}  # failure() names these with the command/path
    for name, text in _all_steps():
        step = getattr(lib, f"IB_STEP_{name}")
        assert native.step_name(step) == text
        if name not in special:
            error = native.failure(spec, step, errno.EPERM)
            assert isinstance(error, SetupError) and error.step == text
    assert native.step_name(lib.IB_STEP_NONE) == "step 0"
    assert native.step_name(lib.IB_STEP_PLAN) == f"step {lib.IB_STEP_PLAN}"
    op = native.Op(lib.IB_OP_MKDIR, "make /dev/shm", "/dev/shm")
    assert native.failure(native.Spec(clone_flags=0, ops=(op,)), lib.IB_STEP_PLAN, errno.EROFS).step == "make /dev/shm"


def test_cdefs_declare_no_constants_of_their_own() -> None:
    """Constants reach Python from the headers (build.py makes their cdef lines), so a
    cdef cannot number a step or a flag differently from C."""
    for cdef in NATIVE.glob("*.cdef"):
        text = cdef.read_text()
        assert "#define" not in text and "enum" not in text, cdef.name


def test_python_uses_only_constants_the_headers_declare() -> None:
    used: Set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.parent != NATIVE:  # build.py speaks of the lists themselves
            used |= set(re.findall(r"\bIB_[A-Z0-9_]+\b", path.read_text()))
    assert used, "the scan found nothing: the pattern is wrong"
    missing = sorted(name for name in used if not hasattr(lib, name))
    assert missing == []


# -- the lists' order is the order spawn.c performs the steps -------------------------------


def _code(text: str) -> str:
    """C text without comments and string literals."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def _functions(text: str) -> Dict[str, str]:
    """Function bodies of a C file in the project's style (the opening brace alone at the
    start of a line after the parameters, the closing one alone at the start of a line)."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"(\w+)\([^(){};]*\)[ \t]*\n\{\n(.*?)\n\}\n", text, re.S)}


def _performed(functions: Dict[str, str], name: str, calling: Tuple[str, ...] = ()) -> List[str]:
    """The steps a function names, in the order its code reads, with the functions it
    calls (or hands to clone) read in place."""
    steps: List[str] = []
    for token in re.findall(r"\b(IB_STEP_\w+|[a-z_]\w*)\b", functions[name]):
        if token.startswith("IB_STEP_"):
            if token not in ("IB_STEP_PLAN", "IB_STEP_NONE"):
                steps.append(token[len("IB_STEP_"):])
        elif token in functions and token != name and token not in calling:
            steps += _performed(functions, token, calling + (name,))
    return steps


def _first_seen(steps: List[str], known: List[str]) -> List[str]:
    order: List[str] = []
    for step in steps:
        if step not in order and step not in known:
            order.append(step)
    return order


def test_step_lists_follow_the_order_spawn_c_performs_them() -> None:
    """spawn.h promises each list is in the order its process first performs the steps:
    a container's first process (child_main), what only exec's join helper adds
    (join_main), the parent's own record (ib_spawn_shared), and the forwarder of
    published ports (forward.c: forward_main)."""
    functions = _functions(_code((NATIVE / "spawn.c").read_text()))
    assert {"child_main", "finish_and_exec", "join_main", "ib_spawn_shared"} <= set(functions)
    lists = {part: [name for name, _ in steps] for part, steps in _step_lists().items()}
    child = _first_seen(_performed(functions, "child_main"), [])
    join = _first_seen(_performed(functions, "join_main"), child)
    parent = _first_seen(_performed(functions, "ib_spawn_shared"), child + join)
    assert lists["CHILD"] == child
    assert lists["JOIN"] == join
    assert lists["PARENT"] == parent
    forwarder = _functions(_code((NATIVE / "forward.c").read_text()))
    assert lists["FORWARD"] == _first_seen(_performed(forwarder, "forward_main"), child + join + parent)


def test_the_order_check_can_fail() -> None:
    """The reading of spawn.c sees a swap of two steps."""
    functions = _functions(_code((NATIVE / "spawn.c").read_text()))
    body = functions["child_main"]
    assert "IB_STEP_HOSTNAME" in body and "IB_STEP_LOOPBACK" in body
    functions["child_main"] = (body.replace("IB_STEP_HOSTNAME", "@").replace("IB_STEP_LOOPBACK", "IB_STEP_HOSTNAME")
                               .replace("@", "IB_STEP_LOOPBACK"))
    child = _first_seen(_performed(functions, "child_main"), [])
    assert child != [name for name, _ in _step_lists()["CHILD"]]


# -- openat2 ---------------------------------------------------------------------------------


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
