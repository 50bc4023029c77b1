"""Platform normalisation and matching, as containerd's platforms package does them."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isobox.errors import InvalidOption
from isobox.images.platform import Platform, _amd64_level

pytestmark = pytest.mark.unit  # every test here is pure (tests/fixtures/seam.py)


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"),
    ("linux/amd64/v1", "linux/amd64"),
    ("linux/amd64/v3", "linux/amd64/v3"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm64/8", "linux/arm64"),
    ("linux/arm64/v8.2", "linux/arm64/v8.2"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/6", "linux/arm/v6"),
    ("linux/armv6l", "linux/arm/v6"),
    ("linux/i386", "linux/386"),
    ("linux/i686", "linux/386"),
    ("Linux/AMD64", "linux/amd64"),
    ("macos/arm64", "darwin/arm64"),
    ("arm64", "linux/arm64"),
    ("riscv64", "linux/riscv64"),
    ("linux/s390x", "linux/s390x"),
])
def test_parse_normalises_like_containerd(text, expected):
    assert str(Platform.parse(text)) == expected


def test_equal_after_normalisation():
    assert Platform("linux", "aarch64") == Platform.parse("linux/arm64/v8")
    assert Platform("linux", "x86_64", "v1") == Platform("linux", "amd64")
    assert hash(Platform("linux", "armhf")) == hash(Platform("linux", "arm", "v7"))


@pytest.mark.parametrize("text", ["", "/", "linux/", "linux/amd64/v3/x", "linux/am d64",
                                  "linux/../amd64", "linux/amd64/", "lin*ux/amd64"])
def test_invalid_platform_text_is_refused(text):
    with pytest.raises(InvalidOption):
        Platform.parse(text)


@pytest.mark.parametrize("doc", [{"os": "linux"}, {"architecture": "amd64"},
                                 {"os": "linux", "architecture": 5},
                                 {"os": "linux", "architecture": "arm", "variant": 7}, []])
def test_invalid_oci_platform_is_refused(doc):
    with pytest.raises(InvalidOption):
        Platform.from_oci(doc)


def test_oci_platform_round_trip():
    doc = {"os": "linux", "architecture": "arm", "variant": "v7"}
    assert Platform.from_oci(doc).to_oci() == doc
    assert Platform.from_oci({"os": "linux", "architecture": "amd64", "variant": ""}).to_oci() \
        == {"os": "linux", "architecture": "amd64"}


def test_host_is_this_machine():
    host = Platform.host()
    uname = os.uname()
    assert host.os == uname.sysname.lower()
    assert host.architecture == Platform("linux", uname.machine).architecture
    assert host.compatible()[0] == host


@pytest.mark.parametrize("runner, image, runs", [
    ("linux/arm64", "linux/arm64/v8", True),
    ("linux/arm64", "linux/arm/v7", True),
    ("linux/arm64", "linux/arm/v5", True),
    ("linux/arm64", "linux/arm64/v8.1", False),
    ("linux/arm64/v8.2", "linux/arm64/v8.1", True),
    ("linux/arm64/v9", "linux/arm64/v8.5", True),
    ("linux/arm64/v9", "linux/arm64/v8.6", False),
    ("linux/arm/v7", "linux/arm/v6", True),
    ("linux/arm/v6", "linux/arm/v7", False),
    ("linux/arm/v7", "linux/arm64", False),
    ("linux/amd64", "linux/386", True),
    ("linux/amd64", "linux/amd64/v2", False),
    ("linux/amd64/v3", "linux/amd64/v2", True),
    ("linux/amd64/v3", "linux/amd64", True),
    ("linux/amd64", "linux/arm64", False),
    ("linux/amd64", "windows/amd64", False),
    ("linux/amd64", "unknown/unknown", False),
])
def test_matches_like_containerd_only(runner, image, runs):
    assert Platform.parse(runner).matches(Platform.parse(image) if image != "unknown/unknown"
                                          else Platform("unknown", "unknown")) is runs


def test_best_prefers_exact_variant_and_skips_attestations():
    entries = [Platform("unknown", "unknown"), Platform.parse("linux/arm/v6"),
               Platform.parse("linux/arm/v7"), Platform.parse("linux/arm64")]
    assert Platform.parse("linux/arm/v7").best(entries) == 2
    assert Platform.parse("linux/arm/v6").best(entries) == 1
    assert Platform.parse("linux/arm64/v8").best(entries) == 3
    assert Platform.parse("linux/arm64").best(entries[:3]) == 2
    assert Platform.parse("linux/s390x").best(entries) is None
    assert Platform.parse("linux/amd64").best([Platform("unknown", "unknown")]) is None


def test_best_takes_an_entry_without_platform_last():
    assert Platform.parse("linux/amd64").best([None, Platform.parse("linux/amd64")]) == 1
    assert Platform.parse("linux/amd64").best([Platform.parse("linux/arm64"), None]) == 1


def test_amd64_level_from_cpu_flags():
    v2 = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
    v3 = v2 + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    assert _amd64_level("fpu sse2") is None
    assert _amd64_level(v2) == "v2"
    assert _amd64_level(v3) == "v3"
    assert _amd64_level(v3 + " avx512f avx512bw avx512cd avx512dq avx512vl") == "v4"
    assert _amd64_level(v2.replace("popcnt", "") + " avx512f") is None


_archs = st.sampled_from(["amd64", "x86_64", "386", "i386", "arm64", "aarch64", "arm", "armhf",
                          "armel", "ppc64le", "s390x", "riscv64", "mips64le"])
_variants = st.one_of(st.none(), st.sampled_from(["v1", "v2", "v3", "v4", "v5", "v6", "v7",
                                                  "v8", "8", "7", "v8.1", "v8.4", "v9",
                                                  "v9.2"]))
platforms = st.builds(Platform, os=st.sampled_from(["linux", "Linux", "windows", "freebsd"]),
                      architecture=_archs, variant=_variants)


@given(platforms)
def test_format_then_parse_is_identity(p):
    assert Platform.parse(str(p)) == p
    assert Platform.from_oci(p.to_oci()) == p


@given(platforms)
def test_normalisation_is_idempotent(p):
    assert Platform(p.os, p.architecture, p.variant) == p


@given(platforms)
def test_a_platform_runs_itself_first(p):
    assert p.compatible()[0] == p
    assert p.matches(p)
    assert len(set(p.compatible())) == len(p.compatible())


@given(platforms, st.lists(st.one_of(st.none(), platforms), max_size=8))
def test_best_is_the_most_preferred_compatible_entry(wanted, entries):
    choice = wanted.best(entries)
    order = wanted.compatible()

    def rank(entry):
        return len(order) if entry is None else order.index(entry)

    usable = [i for i, e in enumerate(entries) if e is None or e in order]
    if not usable:
        assert choice is None
        return
    assert choice is not None
    assert rank(entries[choice]) == min(rank(entries[i]) for i in usable)
    assert choice == min(i for i in usable if rank(entries[i]) == rank(entries[choice]))
