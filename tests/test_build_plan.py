"""A Dockerfile as a build plan (isobox.build.plan): stages, argument scopes, targets and
what a target needs, as BuildKit plans them."""

from __future__ import annotations

import pytest

from isobox.errors import BuildError
from isobox.builder.plan import plan, platform_args
from isobox.images.dockerfile import parse
from isobox.images.platform import Platform

pytestmark = pytest.mark.unit


def make(text: str, **kw: object):
    return plan(parse(text), **kw)  # type: ignore[arg-type]


def test_global_args_reach_from_lines_and_build_args_override_them() -> None:
    p = make("ARG TAG=1.36\nARG REPO=busybox\nFROM ${REPO}:${TAG} AS base\nRUN x\n", build_args={"TAG": "2"})
    (s,) = p.stages
    assert s.base == "busybox:2" and s.name == "base" and p.declared_globals == ("TAG", "REPO")
    assert [i.keyword for i in s.instructions] == ["RUN"]


def test_a_dockerfile_must_begin_with_from() -> None:
    with pytest.raises(BuildError, match="Dockerfile:1: a Dockerfile must begin with FROM"):
        make("RUN x\nFROM a\n")
    with pytest.raises(BuildError, match="must begin with FROM"):
        make("ARG A\n")


def test_stage_names_and_targets() -> None:
    text = "FROM a AS Build\nRUN make\nFROM build AS test\nRUN t\nFROM scratch\nCOPY --from=build /x /x\n"
    p = make(text)
    assert [s.name for s in p.stages] == ["build", "test", None]
    assert p.stages[1].base_stage == 0 and p.stages[2].base == "scratch"
    assert p.target == 2 and p.needed() == [0, 2]  # the test stage is not needed
    assert make(text, target="TEST").needed() == [0, 1]
    with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
        make(text, target="nope")
    with pytest.raises(BuildError, match="duplicate stage name 'a'"):
        make("FROM x AS a\nFROM y AS a\n")
    with pytest.raises(BuildError, match="invalid stage name"):
        make("FROM x AS 1a\n")
    with pytest.raises(BuildError, match="must be FROM"):
        make("FROM x AS\n")


def test_copy_from_and_run_mount_from_are_dependencies() -> None:
    p = make("FROM a AS one\nFROM b AS two\nFROM c\nRUN --mount=type=bind,from=two,target=/t x\n"
             "COPY --from=0 /a /a\n")
    assert p.needed() == [1, 0, 2]
    with pytest.raises(BuildError, match="names a later stage"):
        make("FROM a AS x\nCOPY --from=1 /a /a\nFROM b\n", target="x").needed()


def test_unused_build_args_are_reported_and_proxies_are_predefined() -> None:
    p = make("ARG A\nFROM x\nARG B\n", build_args={"A": "1", "B": "2", "C": "3", "HTTP_PROXY": "p"})
    assert p.unused_args == ("C",)


def test_platform_args_and_from_platform() -> None:
    auto = platform_args(Platform.parse("linux/arm64"), Platform.parse("linux/amd64"))
    assert auto["TARGETARCH"] == "arm64" and auto["BUILDPLATFORM"] == "linux/amd64"
    assert auto["TARGETVARIANT"] == "" or auto["TARGETVARIANT"] == "v8"
    p = make("FROM --platform=$BUILDPLATFORM golang AS b\nFROM alpine\n", predefined=auto)
    assert p.stages[0].platform == "linux/amd64" and p.stages[1].platform is None
    with pytest.raises(BuildError, match="unknown flag --plat"):
        make("FROM --plat=x a\n")
