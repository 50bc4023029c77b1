"""A build context: which of its files a build sees (``.dockerignore``), read as Docker reads it.

The rules (docs.docker.com/build/concepts/context/#dockerignore-files, implemented by
moby/patternmatcher, which BuildKit and Buildah share):

* one pattern per line; a line starting with ``#`` is a comment (before any trimming);
  blanks around a pattern are dropped; an empty line is nothing;
* ``!`` before a pattern makes it an exception (files it matches are kept);
* each pattern is cleaned as a path (``filepath.Clean``: ``./a//b/`` is ``a/b``, ``..``
  resolved lexically) and a leading ``/`` dropped: every pattern is relative to the root;
* the pattern language is Go's ``filepath.Match`` (``*`` any run of non-``/``, ``?`` one
  non-``/`` character, ``[...]`` a class with ``^`` for negation and ranges, ``\\`` escaping the
  next character) plus ``**``, any number of directories (zero included);
* a pattern matches a path when it matches the path itself or one of its parent
  directories, and the LAST matching pattern decides: an exception re-includes a file
  below an excluded directory (unlike ``.gitignore``), but only where the walk goes:
  into an excluded directory only when an exception's text starts with its path
  (`IgnoreRules.may_descend`);
* ``<Dockerfile>.dockerignore`` beside the Dockerfile is used instead of the context's
  ``.dockerignore`` when it exists (BuildKit's rule).

Errors are `BuildError`s naming the file and line.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import List, Optional, Set, Tuple, Union

import attrs

from ..errors import BuildError

__all__ = ["IgnorePattern", "IgnoreRules", "read_ignore_file", "ignore_file_for", "included", "pattern_regex"]


def _clean(path: str) -> str:
    """Go's path.Clean for a relative or absolute slash path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: List[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def pattern_regex(pattern: str, where: str) -> "re.Pattern[str]":
    """Go's filepath.Match language with ``**``, as one anchored regular expression."""
    out: List[str] = []
    k, n = 0, len(pattern)
    while k < n:
        ch = pattern[k]
        if ch == "*":
            if k + 1 < n and pattern[k + 1] == "*":
                k += 2
                if k < n and pattern[k] == "/":
                    k += 1  # "**/" is "**"
                out.append(".*" if k >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if k + 1 < n:
                out.append(re.escape(pattern[k + 1]))
                k += 1
            else:
                raise BuildError(f"{where}: a pattern cannot end with \\: {pattern!r}")
        elif ch == "[":
            end = k + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1  # a leading ] is a member
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:
                raise BuildError(f"{where}: syntax error in pattern {pattern!r}: unclosed [")
            body = pattern[k + 1:end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            if not body:
                raise BuildError(f"{where}: syntax error in pattern {pattern!r}: empty class")
            # passed through as a class, as patternmatcher does (so a negated class can
            # match "/" there too)
            members = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append("[" + ("^" if negate else "") + members + "]")
            k = end
        else:
            out.append(re.escape(ch))
        k += 1
    try:
        return re.compile("".join(out) + r"\Z", re.S)
    except re.error as exc:
        raise BuildError(f"{where}: syntax error in pattern {pattern!r}: {exc}") from None


@attrs.frozen
class IgnorePattern:
    text: str  # cleaned, without "!"
    exception: bool
    regex: "re.Pattern[str]" = attrs.field(eq=False, repr=False)

    def matches(self, path: str) -> bool:
        """The pattern matches ``path`` or one of its parent directories."""
        if self.regex.match(path):
            return True
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:i])) for i in range(1, len(parts)))


@attrs.frozen
class IgnoreRules:
    """Parsed ``.dockerignore`` patterns, in order."""

    patterns: Tuple[IgnorePattern, ...] = ()

    @classmethod
    def parse(cls, text: Union[str, bytes], source: str = ".dockerignore") -> "IgnoreRules":
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
        patterns: List[IgnorePattern] = []
        for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
            if line.startswith("#"):
                continue
            pattern = line.strip()
            if not pattern:
                continue
            exception = pattern.startswith("!")
            if exception:
                pattern = pattern[1:].strip()
                if not pattern:
                    raise BuildError(f'{source}:{number}: illegal exclusion pattern: "!"')
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            patterns.append(IgnorePattern(text=pattern, exception=exception,
                                          regex=pattern_regex(pattern, f"{source}:{number}")))
        return cls(tuple(patterns))

    def may_descend(self, directory: str) -> bool:
        """Whether a walk enters an excluded ``directory``: only when an exception's text
        begins with ``directory/`` (Docker's archive walk, BuildKit's and Buildah's too:
        ``!**/*.md`` does not re-include ``a/x.md`` once ``a`` is excluded)."""
        prefix = directory + "/"
        return any(p.exception and (p.text + "/").startswith(prefix) for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) is left out: the last
        pattern that matches it or a parent decides."""
        path = _clean(path).lstrip("/")
        excluded = False
        for p in self.patterns:
            # a pattern can only change the verdict: skip the ones that cannot
            if p.exception != excluded:
                continue
            if p.matches(path):
                excluded = not p.exception
        return excluded


def ignore_file_for(context: Union[str, "os.PathLike[str]"], dockerfile: Optional[str] = None) -> Optional[str]:
    """The ignore file a build of ``context`` with ``dockerfile`` uses, or None."""
    root = os.fspath(context)
    if dockerfile:
        own = os.path.join(root, dockerfile) + ".dockerignore" if not os.path.isabs(dockerfile) \
            else dockerfile + ".dockerignore"
        if os.path.isfile(own):
            return own
    shared = os.path.join(root, ".dockerignore")
    return shared if os.path.isfile(shared) else None


_MAX_IGNORE = 1 << 20


def read_ignore_file(path: Optional[str]) -> IgnoreRules:
    """The rules of an ignore file (none when ``path`` is None), at most 1 MiB."""
    if path is None:
        return IgnoreRules()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BuildError(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        data = os.read(fd, _MAX_IGNORE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_IGNORE:
        raise BuildError(f"{path}: larger than 1 MiB")
    return IgnoreRules.parse(data, posixpath.basename(path))


def included(root: Union[str, "os.PathLike[str]"], rules: IgnoreRules) -> List[str]:
    """Every path of the context a build sees (``/``-separated, relative, sorted): what the
    rules keep, with the directories that lead to it (a kept file below an excluded
    directory brings its parents, as ``COPY .`` then makes them). Symlinks are listed, not
    followed; an excluded directory is walked only as `may_descend` says."""
    top = os.fspath(root)
    kept: Set[str] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(top, rel) if rel else top)
        except OSError as exc:
            raise BuildError(f"{os.path.join(top, rel)}: cannot list: {exc.strerror}") from exc
        for name in names:
            path = f"{rel}/{name}" if rel else name
            is_dir = os.path.isdir(os.path.join(top, path)) and not os.path.islink(os.path.join(top, path))
            if not rules.excluded(path):
                kept.add(path)
                parent = rel
                while parent and parent not in kept:
                    kept.add(parent)
                    parent = posixpath.dirname(parent)
            elif not is_dir or not rules.may_descend(path):
                continue
            if is_dir:
                stack.append(path)
    return sorted(kept)
