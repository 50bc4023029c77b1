"""COPY and ADD: what a step copies, staged in a directory that becomes its layer.

The rules are Docker's (the reference's COPY and ADD sections, as BuildKit applies them):

* sources are relative to the build context (a leading ``/`` too), or to the root of
  another stage or image (``--from``); a pattern (``*``, ``?``, ``[...]``, ``**``) matches
  what the context shows after ``.dockerignore``; a source that matches nothing fails;
* a directory's *contents* are copied, not the directory itself; symbolic links inside are
  copied as links, never followed;
* several sources, or a pattern, need a destination that ends in ``/``; a destination
  ending in ``/``, or a directory the image already has, receives files under their own
  names; otherwise the destination is the file's new path; a relative destination is
  relative to WORKDIR;
* what is copied belongs to 0:0, or to ``--chown``'s user and group (names looked up in
  the image's own /etc/passwd and /etc/group); ``--chmod`` sets the mode of everything
  copied; modes and modification times are otherwise kept;
* directories made on the way to the destination are 0755 root's, dated the epoch (so the
  same copy makes the same layer); those the image has keep their metadata (the layer
  holds them as an overlay upper would);
* ADD also unpacks a local tar archive (plain, gzip, bzip2, xz or zstd) into the
  destination; a URL source is refused with a clear error (not supported yet).

The staging directory is written by this process, so owners are kept beside it
(`Staged.owners`) and given to the layer writer, which needs no root to write them.
"""

from __future__ import annotations

import bz2
import lzma
import os
import posixpath
import re
import stat
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import attrs

from ..errors import BuildError
from ..host.fs import remove_tree
from ..images import overlay
from .context import IgnoreRules, pattern_regex

__all__ = ["Staged", "ContextSource", "LayersSource", "stage", "has_glob"]

_GLOB = re.compile(r"[*?\[]")
_TAR_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def has_glob(text: str) -> bool:
    return bool(_GLOB.search(text))


@attrs.frozen
class ContextSource:
    """The build context: a directory and its ignore rules."""

    root: str
    rules: IgnoreRules

    def label(self) -> str:
        return "the build context"


@attrs.frozen
class LayersSource:
    """Another stage's or an image's root, as its layers (lowest first) show it."""

    layers: Tuple[str, ...]
    name: str

    def label(self) -> str:
        return self.name


@attrs.frozen
class Staged:
    """A staged step: its directory and the owners to write (relative name → (uid, gid))."""

    root: str
    owners: Dict[str, Tuple[int, int]]
    files: int

    def owner(self, rel: str) -> Optional[Tuple[int, int]]:
        return self.owners.get(rel)


class _Stager:
    def __init__(self, root: str, image_layers: Sequence[str], chown: Tuple[int, int],
                 chmod: Optional[int], where: str) -> None:
        self.root = root
        self.image_layers = list(image_layers)
        self.chown = chown
        self.chmod = chmod
        self.where = where
        self.owners: Dict[str, Tuple[int, int]] = {}
        self.times: Dict[str, Tuple[int, int]] = {}  # directories' (atime, mtime), set last
        self.files = 0

    def error(self, message: str) -> BuildError:
        return BuildError(f"{self.where}: {message}")

    # -- where things go -----------------------------------------------------------------

    def in_image(self, rel: str) -> Optional[os.stat_result]:
        found = overlay.find(self.image_layers, rel)
        if isinstance(found, overlay.Found):
            os.close(found.parent_fd)
            return found.st
        return None

    def dest_is_dir(self, rel: str) -> bool:
        st = self.in_image(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            return True
        return os.path.isdir(os.path.join(self.root, rel)) and not os.path.islink(os.path.join(self.root, rel))

    def parents(self, rel: str, new_owner: Optional[Tuple[int, int]] = None) -> None:
        """Make ``rel``'s directories (and ``rel`` itself when ``new_owner`` is given: a
        destination directory) in the staging tree, as the image has them or new."""
        parts = [p for p in rel.split("/") if p]
        upto = parts if new_owner is not None else parts[:-1]
        for i in range(1, len(upto) + 1):
            sub = "/".join(upto[:i])
            path = os.path.join(self.root, sub)
            if os.path.isdir(path) and not os.path.islink(path):
                continue
            st = self.in_image(sub)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise self.error(f"cannot copy to /{rel}: /{sub} is not a directory in the image")
            os.mkdir(path, 0o700)
            if st is not None:
                os.chmod(path, stat.S_IMODE(st.st_mode))
                self.times[sub] = (st.st_atime_ns, st.st_mtime_ns)
                self.owners[sub] = (st.st_uid, st.st_gid)
            else:
                os.chmod(path, 0o755)
                # a time of its own would make the same copy a different layer each build
                # (and miss the cache): the epoch, as reproducible builds write it
                self.times[sub] = (0, 0)
                is_dest = i == len(upto) and new_owner is not None
                self.owners[sub] = new_owner if is_dest and new_owner is not None else (0, 0)

    # -- copying -------------------------------------------------------------------------

    def _mode(self, st: os.stat_result) -> int:
        return self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)

    def put_file(self, read: Callable[[], int], st: os.stat_result, rel: str) -> None:
        """A regular file from an open fd (``read`` opens it), at ``rel``."""
        path = os.path.join(self.root, rel)
        self._make_room(path)
        src = read()
        try:
            dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    chunk = os.read(src, 1 << 20)
                    if not chunk:
                        break
                    os.write(dst, chunk)
                os.fchmod(dst, self._mode(st))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.owners[rel] = self.chown
        self.files += 1

    def put_link(self, target: str, st: os.stat_result, rel: str) -> None:
        path = os.path.join(self.root, rel)
        self._make_room(path)
        os.symlink(target, path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        self.owners[rel] = self.chown
        self.files += 1

    def put_dir(self, st: os.stat_result, rel: str) -> None:
        path = os.path.join(self.root, rel)
        if not (os.path.isdir(path) and not os.path.islink(path)):
            self._make_room(path)
            os.mkdir(path, 0o700)
        os.chmod(path, self._mode(st))
        self.owners[rel] = self.chown

    def finish_dir(self, st: os.stat_result, rel: str) -> None:
        self.times[rel] = (st.st_atime_ns, st.st_mtime_ns)

    def set_times(self) -> None:
        """Directories' times, deepest first, once nothing more is made in them (each new
        entry would move its directory's mtime to now)."""
        for rel in sorted(self.times, key=lambda r: r.count("/"), reverse=True):
            os.utime(os.path.join(self.root, rel), ns=self.times[rel])

    def _make_room(self, path: str) -> None:
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                os.unlink(path)


# -- sources ------------------------------------------------------------------------------------


def _walk_context(src: ContextSource, top: str) -> Iterator[Tuple[str, os.stat_result]]:
    """(relative path, lstat) below ``top`` (a context directory), parents first, what the
    ignore rules keep, sorted."""
    stack = [top]
    while stack:
        rel = stack.pop()
        names = sorted(os.listdir(os.path.join(src.root, rel)), reverse=True)
        for name in names:
            path = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(src.root, path))
            excluded = src.rules.excluded(path)
            is_dir = stat.S_ISDIR(st.st_mode)
            if excluded and not (is_dir and src.rules.may_descend(path)):
                continue
            if is_dir:
                stack.append(path)
            if not excluded:
                yield path, st


def _context_matches(src: ContextSource, pattern: str, st_error: Callable[[str], BuildError]) -> List[str]:
    clean = posixpath.normpath("/" + pattern).lstrip("/")
    if clean in ("", "."):
        return [""]
    if not has_glob(clean):
        full = os.path.join(src.root, clean)
        if not os.path.lexists(full) or src.rules.excluded(clean):
            raise st_error(f"{pattern}: not found in the build context (or excluded by .dockerignore)")
        target, root = os.path.realpath(full), os.path.realpath(src.root)
        if not (target == root or target.startswith(root + "/")):
            raise st_error(f"{pattern}: a symbolic link that leaves the build context")
        return [clean]
    regex = pattern_regex(clean, "COPY")
    found = [rel for rel, _ in _walk_context(src, "") if regex.match(rel)]
    if not found:
        raise st_error(f"{pattern}: no file in the build context matches")
    # a match below another match is copied with it
    found.sort()
    out: List[str] = []
    for rel in found:
        if not any(rel.startswith(o + "/") for o in out):
            out.append(rel)
    return out


def _layers_matches(src: LayersSource, pattern: str, st_error: Callable[[str], BuildError]) -> List[str]:
    clean = posixpath.normpath("/" + pattern).lstrip("/")
    if clean in ("", "."):
        return [""]
    head, _, last = clean.rpartition("/")
    if has_glob(head):
        raise st_error(f"{pattern}: a pattern in a directory name is not supported with --from")
    if not has_glob(last):
        if not isinstance(overlay.find(src.layers, clean), overlay.Found):
            raise st_error(f"{pattern}: not found in {src.label()}")
        return [clean]
    regex = pattern_regex(last, "COPY --from")
    names = [n for n in overlay.listdir(src.layers, head) if regex.match(n)]
    if not names:
        raise st_error(f"{pattern}: nothing in {src.label()} matches")
    return [f"{head}/{n}" if head else n for n in names]


def _opener(path: str) -> Callable[[], int]:
    return lambda: os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _copy_from_context(s: _Stager, src: ContextSource, rel: str, dest: str, into_dir: bool) -> None:
    full = os.path.join(src.root, rel) if rel else src.root
    st = os.stat(full)  # the source itself is followed (within the context: checked above)
    if stat.S_ISDIR(st.st_mode):
        s.parents(dest, new_owner=s.chown)
        dirs: List[Tuple[os.stat_result, str]] = []
        for sub, sst in _walk_context(src, rel):
            target = posixpath.join(dest, sub[len(rel):].lstrip("/")) if rel else posixpath.join(dest, sub)
            if stat.S_ISDIR(sst.st_mode):
                s.parents(target)
                s.put_dir(sst, target)
                dirs.append((sst, target))
            elif stat.S_ISLNK(sst.st_mode):
                s.parents(target)
                s.put_link(os.readlink(os.path.join(src.root, sub)), sst, target)
            elif stat.S_ISREG(sst.st_mode):
                s.parents(target)
                s.put_file(_opener(os.path.join(src.root, sub)), sst, target)
            # sockets, FIFOs and devices in a context are not copied (Docker skips them)
        for dst, target in reversed(dirs):
            s.finish_dir(dst, target)
        return
    target = posixpath.join(dest, posixpath.basename(rel)) if into_dir else dest
    s.parents(target)
    if not stat.S_ISREG(st.st_mode):
        raise s.error(f"{rel}: not a regular file or directory")
    s.put_file(lambda: os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), st, target)


def _copy_from_layers(s: _Stager, src: LayersSource, rel: str, dest: str, into_dir: bool) -> None:
    def found(path: str) -> overlay.Found:
        f = overlay.find(src.layers, path)
        if not isinstance(f, overlay.Found):
            raise s.error(f"/{path}: not found in {src.label()}")
        return f

    def opener(f: overlay.Found) -> Callable[[], int]:
        return lambda: os.open(f.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=f.parent_fd)

    def copy_entry(path: str, target: str) -> None:
        f = found(path)
        try:
            if stat.S_ISDIR(f.st.st_mode):
                s.parents(target)
                s.put_dir(f.st, target)
                for name in overlay.listdir(src.layers, path):
                    copy_entry(f"{path}/{name}", f"{target}/{name}")
                s.finish_dir(f.st, target)
            elif stat.S_ISLNK(f.st.st_mode):
                s.parents(target)
                s.put_link(os.fsdecode(os.readlink(f.name, dir_fd=f.parent_fd)), f.st, target)
            elif stat.S_ISREG(f.st.st_mode):
                s.parents(target)
                s.put_file(opener(f), f.st, target)
        finally:
            os.close(f.parent_fd)

    if rel == "":
        s.parents(dest, new_owner=s.chown)
        for name in overlay.listdir(src.layers, ""):
            copy_entry(name, posixpath.join(dest, name))
        return
    f = found(rel)
    os.close(f.parent_fd)
    if stat.S_ISDIR(f.st.st_mode):
        s.parents(dest, new_owner=s.chown)
        for name in overlay.listdir(src.layers, rel):
            copy_entry(f"{rel}/{name}", posixpath.join(dest, name))
        return
    copy_entry(rel, posixpath.join(dest, posixpath.basename(rel)) if into_dir else dest)


def _is_archive(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    if any(head.startswith(m) for m in _TAR_MAGIC):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _extract(s: _Stager, path: str, dest: str) -> None:
    from ..images.unpack import apply_layer

    s.parents(dest, new_owner=(0, 0))
    with open(path, "rb") as f:
        head = f.read(6)
    stream: IO[bytes]
    if head.startswith(b"BZh"):
        stream = bz2.open(path, "rb")
    elif head.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.open(path, "rb")
    else:
        stream = open(path, "rb")  # plain, gzip and zstd: apply_layer reads their magic

    def chunks() -> Iterator[bytes]:
        with stream:
            while True:
                data = stream.read(1 << 20)
                if not data:
                    return
                yield data

    stats = apply_layer(chunks(), os.path.join(s.root, dest), existing=True)
    for rel_path, uid, gid, _mode in stats.owners:
        s.owners[posixpath.join(dest, rel_path.strip("/"))] = (uid, gid)
    s.files += stats.entries


def stage(root: str, *, keyword: str, sources: Sequence[str], dest: str, source: "ContextSource | LayersSource",
          image_layers: Sequence[str], chown: Tuple[int, int] = (0, 0), chmod: Optional[int] = None,
          where: str = "COPY") -> Staged:
    """Stage a COPY or ADD (``keyword``) of ``sources`` (expanded) to ``dest`` (absolute,
    expanded, WORKDIR applied) into the empty directory ``root``; ``image_layers`` are the
    stage's layers so far (lowest first)."""
    s = _Stager(root, image_layers, chown, chmod, where)
    if not sources:
        raise s.error(f"{keyword} requires at least one source and a destination")
    for text in sources:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) or text.startswith("git@"):
            raise s.error(f"{keyword} {text}: sources from URLs and git are not supported yet "
                          "(download in a RUN step, or COPY a local file)")
    dest_rel = posixpath.normpath(dest).lstrip("/")
    dest_rel = "" if dest_rel == "." else dest_rel
    many = len(sources) > 1 or any(has_glob(t) for t in sources)
    if many and not dest.endswith("/"):
        raise s.error(f"When using {keyword} with more than one source file, the destination must be "
                      f"a directory and end with a /: {dest}")
    into_dir = dest.endswith("/") or dest_rel == "" or s.dest_is_dir(dest_rel)

    def st_error(message: str) -> BuildError:
        return s.error(f"{keyword} failed: {message}")

    for text in sources:
        if isinstance(source, ContextSource):
            for rel in _context_matches(source, text, st_error):
                full = os.path.join(source.root, rel)
                if keyword == "ADD" and os.path.isfile(full) and _is_archive(full):
                    _extract(s, full, dest_rel)
                    continue
                _copy_from_context(s, source, rel, dest_rel, into_dir or many)
        else:
            for rel in _layers_matches(source, text, st_error):
                _copy_from_layers(s, source, rel, dest_rel, into_dir or many)
    s.set_times()
    return Staged(root=root, owners=s.owners, files=s.files)
