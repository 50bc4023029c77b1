"""overlayfs's layer form and the lookup through a stack of layers (isobox.images.overlay):
as a property, what `find` says of every path is what the kernel's own overlay shows when
the same layers are mounted (in a private mount namespace; rootless, in a user namespace
with userxattr)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.host import IS_ROOT
from isobox.host.fs import remove_tree
from isobox.images import overlay

NS = "trusted" if IS_ROOT else "user"
NAMES = ["a", "b"]  # few names: layers collide often

# what one layer holds: {path: kind}, kind in file, dir, opaque-dir, whiteout, link
KINDS = ["file", "dir", "opaque-dir", "whiteout", "link"]


@st.composite
def layer(draw: st.DrawFn) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for _ in range(draw(st.integers(0, 6))):
        depth = draw(st.integers(1, 3))
        path = "/".join(draw(st.sampled_from(NAMES)) for _ in range(depth))
        parents = ["/".join(path.split("/")[:i]) for i in range(1, depth)]
        if any(out.get(p, "dir") not in ("dir", "opaque-dir") for p in parents) or path in out:
            continue
        for p in parents:
            out.setdefault(p, "dir")
        if any(k.startswith(path + "/") for k in out):
            out[path] = draw(st.sampled_from(["dir", "opaque-dir"]))
        else:
            out[path] = draw(st.sampled_from(KINDS))
    return out


def build(root: Path, spec: Dict[str, str]) -> None:
    root.mkdir()
    for path in sorted(spec, key=lambda p: p.count("/")):
        p, kind = root / path, spec[path]
        if kind in ("dir", "opaque-dir"):
            p.mkdir()
            if kind == "opaque-dir":
                os.setxattr(p, f"{NS}.overlay.opaque", b"y")
        elif kind == "file":
            p.write_text(path)
        elif kind == "link":
            os.symlink("/nowhere", p)
        else:
            os.mknod(p, stat.S_IFCHR | 0o600, 0)


def kernel_view(layers: List[Path], paths: List[str], work: Path) -> Dict[str, str]:
    """Each path's type as the kernel's overlay of ``layers`` (read-only, lowest first)
    shows it: file, dir, link, or absent."""
    mnt = work / "mnt"
    mnt.mkdir()
    lowers = ":".join(str(p) for p in reversed(layers))
    opts = f"lowerdir={lowers}" + ("" if IS_ROOT else ",userxattr")
    script = ("import json, os, stat, sys\n"
              "out = {}\n"
              "for p in sys.argv[2:]:\n"
              "    try:\n"
              "        m = os.lstat(os.path.join(sys.argv[1], p)).st_mode\n"
              "        out[p] = 'dir' if stat.S_ISDIR(m) else 'link' if stat.S_ISLNK(m) else 'file'\n"
              "        if stat.S_ISDIR(m):\n"
              "            d = os.path.join(sys.argv[1], p)\n"
              # a whiteout in a directory no other layer has is listed by the kernel's
              # readdir (it does not merge that directory) yet never found: not an entry
              "            out[p] += ':' + ','.join(sorted(n for n in os.listdir(d)\n"
              "                                            if os.path.lexists(os.path.join(d, n))))\n"
              "    except (FileNotFoundError, NotADirectoryError):\n"
              "        out[p] = 'absent'\n"
              "print(json.dumps(out))\n")
    cmd = ["unshare", "-m"] + ([] if IS_ROOT else ["-r"]) + [
        "sh", "-c", f'mount -t overlay -o "$1" overlay "$2" && shift 2 && exec "$@"', "sh",
        opts, str(mnt), "/opt/isobox-venv/bin/python", "-c", script, str(mnt), *paths]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def our_view(layers: List[Path], path: str) -> str:
    found = overlay.find(layers, path)
    if not isinstance(found, overlay.Found):
        return "absent"
    os.close(found.parent_fd)
    m = found.st.st_mode
    if stat.S_ISDIR(m):
        return "dir:" + ",".join(overlay.listdir(layers, path))
    return "link" if stat.S_ISLNK(m) else "file"


ALL_PATHS = sorted({"/".join(p) for n in (1, 2, 3) for p in __import__("itertools").product(NAMES, repeat=n)})
ROOT_AND_PATHS = ["."] + ALL_PATHS


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(layer(), min_size=1, max_size=3))
def test_find_agrees_with_the_kernels_overlay(tmp_path_factory: pytest.TempPathFactory,
                                              stack: List[Dict[str, str]]) -> None:
    base = tmp_path_factory.mktemp("stack")
    (base / "empty").mkdir()
    layers = [base / "empty"]  # a read-only overlay needs two lower layers
    for i, spec in enumerate(stack):
        build(base / str(i), spec)
        layers.append(base / str(i))
    try:
        want = kernel_view(layers, ALL_PATHS, base)
        got = {p: our_view(layers, p) for p in ALL_PATHS}
        assert ",".join(overlay.listdir(layers, "")) == ",".join(
            n for n in NAMES if want[n] != "absent")
        assert got == want, stack
    finally:
        for p in layers:
            remove_tree(p)


@pytest.mark.unit
def test_a_link_on_the_way_blocks_and_is_named(tmp_path: Path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    build(low, {"etc": "dir", "etc/passwd": "file"})
    build(up, {"etc": "link"})
    found = overlay.find([low, up], "etc/passwd")
    assert isinstance(found, overlay.Blocked) and found.path == "etc" and stat.S_ISLNK(found.st.st_mode)
    assert overlay.find([low, up], "") is None


@pytest.mark.parametrize("stack", [
    [{"a": "dir", "a/b": "file"}, {"a": "opaque-dir"}],                       # opaque hides below
    [{"a": "dir", "a/b": "file"}, {"a": "opaque-dir", "a/c": "file"}, {}],    # ... and shows its own
    [{"a": "dir", "a/b": "file"}, {"a": "whiteout"}, {"a": "dir"}],           # a new dir over a whiteout
    [{"a": "dir", "a/b": "dir", "a/b/a": "file"}, {"a": "dir", "a/b": "opaque-dir"}],
    [{"a": "dir", "a/b": "file"}, {"a": "link"}],                             # a link on the way
    [{"a": "file"}, {"a": "dir", "a/a": "file"}],                             # a dir over a file
])
def test_find_agrees_with_the_kernel_on_the_edges(tmp_path: Path, stack: List[Dict[str, str]]) -> None:
    (tmp_path / "empty").mkdir()
    layers = [tmp_path / "empty"]
    for i, spec in enumerate(stack):
        build(tmp_path / str(i), spec)
        layers.append(tmp_path / str(i))
    want = kernel_view(layers, ALL_PATHS, tmp_path)
    assert {p: our_view(layers, p) for p in ALL_PATHS} == want
    assert overlay.listdir(layers, "") == [n for n in NAMES if want[n] != "absent"]
    for p in layers:
        remove_tree(p)
