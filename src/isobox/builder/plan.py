"""A Dockerfile as a build plan: its stages, the arguments in scope where, and which stages
a target needs, as BuildKit plans them (before anything runs).

* ``ARG`` before the first ``FROM`` is global: it may be used in ``FROM`` lines, and inside a
  stage only once the stage declares it again (``ARG NAME`` without a value takes the
  global value); the build's ``build_args`` override declared defaults.
* Predefined arguments need no declaration: the proxy variables (``HTTP_PROXY`` & co., in
  both cases); the platform ones (``TARGETPLATFORM``, ``TARGETOS``, ``TARGETARCH``,
  ``TARGETVARIANT``, ``BUILDPLATFORM``, ``BUILDOS``, ``BUILDARCH``, ``BUILDVARIANT``) are
  set in the global scope and, like any global, must be declared in a stage to be used.
* ``FROM [--platform=P] image [AS name]``: the image and platform are expanded with the
  global arguments; a name (case-insensitive, ``[a-z][a-z0-9-_.]*``) may be used by later
  ``FROM`` and ``COPY --from``; ``scratch`` is the empty image.
* the target (``target=``, default the last stage) and only the stages it depends on (its
  ``FROM`` chain and every ``COPY --from``/``RUN --mount from=`` it names) are built.

Errors are `BuildError`s naming the Dockerfile line.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import attrs

from ..errors import BuildError
from ..images.dockerfile import Dockerfile, Instruction, expand, split_words
from ..images.platform import Platform

__all__ = ["Stage", "BuildPlan", "plan", "PROXY_ARGS", "platform_args"]

PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


def platform_args(target: Platform, build: Platform) -> Dict[str, str]:
    """BuildKit's automatic platform arguments."""
    def four(prefix: str, p: Platform) -> Dict[str, str]:
        return {f"{prefix}PLATFORM": str(p), f"{prefix}OS": p.os, f"{prefix}ARCH": p.architecture,
                f"{prefix}VARIANT": p.variant or ""}
    return {**four("TARGET", target), **four("BUILD", build)}


@attrs.frozen
class Stage:
    index: int
    name: Optional[str]
    base: str  # an image reference, "scratch", or an earlier stage's name
    base_stage: Optional[int]  # the stage `base` names, if it names one
    platform: Optional[str]
    instructions: Tuple[Instruction, ...]
    line: int

    @property
    def label(self) -> str:
        return f"stage {self.index}" + (f" ({self.name})" if self.name else "")


@attrs.frozen
class BuildPlan:
    stages: Tuple[Stage, ...]
    global_args: Mapping[str, str]  # in scope for FROM lines, build args applied
    declared_globals: Tuple[str, ...]
    target: int
    unused_args: Tuple[str, ...]  # build args no ARG declares (Docker warns)

    def stage(self, ref: str) -> Optional[int]:
        """The stage a ``--from`` or ``FROM`` names (a name, or an index), or None."""
        if ref.isdigit():
            index = int(ref)
            return index if index < len(self.stages) else None
        for s in self.stages:
            if s.name == ref.lower():
                return s.index
        return None

    def needed(self) -> List[int]:
        """The stages the target needs, each after those it needs."""
        order: List[int] = []
        seen: Set[int] = set()

        def visit(index: int, path: Tuple[int, ...]) -> None:
            if index in seen:
                return
            if index in path:
                raise BuildError(f"{self.stages[index].label} depends on itself")
            for dep in self.dependencies(index):
                visit(dep, path + (index,))
            seen.add(index)
            order.append(index)

        visit(self.target, ())
        return order

    def dependencies(self, index: int) -> List[int]:
        s = self.stages[index]
        deps: List[int] = [] if s.base_stage is None else [s.base_stage]
        for i in s.instructions:
            refs: List[str] = []
            if i.keyword in ("COPY", "ADD"):
                ref = i.flag("from")
                if ref:
                    refs.append(ref)
            if i.keyword == "RUN":
                for key, value in i.flags:
                    if key == "mount" and value:
                        for part in value.split(","):
                            k, _, v = part.partition("=")
                            if k.strip() == "from" and v:
                                refs.append(v.strip())
            for ref in refs:
                dep = self.stage(ref)
                if dep is not None:
                    if dep >= index:
                        raise i.error(f"--from={ref} names a later stage (or this one)")
                    deps.append(dep)
        return deps


def plan(dockerfile: Dockerfile, *, build_args: Optional[Mapping[str, str]] = None,
         target: Optional[str] = None, predefined: Optional[Mapping[str, str]] = None) -> BuildPlan:
    """The stages of ``dockerfile`` and what building ``target`` needs. ``predefined`` are
    the automatic arguments (`platform_args`), ``build_args`` the caller's."""
    given = dict(build_args or {})
    auto = dict(predefined or {})
    instructions = list(dockerfile.instructions)
    escape = dockerfile.escape
    global_env: Dict[str, str] = dict(auto)
    declared: List[str] = []
    consumed: Set[str] = set()
    k = 0
    while k < len(instructions) and instructions[k].keyword == "ARG":
        for name, default in _arg_pairs(instructions[k], escape):
            declared.append(name)
            consumed.add(name)
            if name in given:
                global_env[name] = given[name]
            elif default is not None:
                global_env[name] = expand(default, global_env, escape, f"{instructions[k].where}: ")
        k += 1
    if k >= len(instructions) or instructions[k].keyword != "FROM":
        where = instructions[k].where if k < len(instructions) else f"{dockerfile_source(dockerfile)}"
        raise BuildError(f"{where}: a Dockerfile must begin with FROM (after parser directives, "
                         "comments and global ARGs)")
    stages: List[Stage] = []
    names: Dict[str, int] = {}
    current: Optional[Instruction] = None
    body: List[Instruction] = []

    def close() -> None:
        assert current is not None
        stages.append(_stage(current, len(stages), body, global_env, names, escape))
        if stages[-1].name:
            names[stages[-1].name] = stages[-1].index

    for i in instructions[k:]:
        if i.keyword == "FROM":
            if current is not None:
                close()
            current, body = i, []
            continue
        if i.keyword == "ARG":
            consumed.update(name for name, _ in _arg_pairs(i, escape))
        body.append(i)
    close()
    if target is None:
        target_index = len(stages) - 1
    else:
        found = names.get(target.lower())
        if found is None:
            raise BuildError(f"target stage {target!r} could not be found "
                             f"(stages: {', '.join(s.name for s in stages if s.name) or 'none named'})")
        target_index = found
    unused = sorted(set(given) - consumed - PROXY_ARGS)
    return BuildPlan(stages=tuple(stages), global_args=global_env, declared_globals=tuple(declared),
                     target=target_index, unused_args=tuple(unused))


def dockerfile_source(dockerfile: Dockerfile) -> str:
    return dockerfile.instructions[0].source if dockerfile.instructions else "Dockerfile"


def _arg_pairs(i: Instruction, escape: str) -> List[Tuple[str, Optional[str]]]:
    """ARG's ``name[=default]`` words (several per line, as BuildKit allows), raw."""
    i.check_flags([])
    words = split_words(i.args, escape)
    if not words:
        raise i.error("requires at least one argument")
    out = []
    for word in words:
        name, eq, default = word.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise i.error(f"invalid argument name {name!r}")
        out.append((name, default if eq else None))
    return out


def _stage(i: Instruction, index: int, body: Sequence[Instruction], global_env: Mapping[str, str],
           names: Mapping[str, int], escape: str) -> Stage:
    i.check_flags(["platform"])
    words = split_words(i.args, escape)
    where = f"{i.where}: "
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise i.error("must be FROM [--platform=P] image [AS name]")
    base = expand(words[0], global_env, escape, where)
    if not base:
        raise i.error(f"{words[0]!r} expands to an empty image name")
    name: Optional[str] = None
    if len(words) == 3:
        name = expand(words[2], global_env, escape, where).lower()
        if not _STAGE_NAME.match(name):
            raise i.error(f"invalid stage name {name!r}: it must match [a-z][a-z0-9-_.]*")
        if name in names:
            raise i.error(f"duplicate stage name {name!r}")
    platform_flag = i.flag("platform")
    platform = expand(platform_flag, global_env, escape, where) if platform_flag else None
    base_stage = names.get(base.lower())
    return Stage(index=index, name=name, base=base, base_stage=base_stage, platform=platform,
                 instructions=tuple(body), line=i.line)
