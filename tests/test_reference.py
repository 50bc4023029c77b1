"""Image references: Docker's own documented cases, and properties of the grammar.

The tables come from distribution/reference's tests (normalize_test.go, reference_test.go,
regexp_test.go), restated with the normalised result ``docker pull`` works with.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional, Tuple

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from isobox.errors import InvalidReference
from isobox.images.reference import Reference

pytestmark = pytest.mark.unit  # every test here is pure (tests/fixtures/seam.py)

F64 = "f" * 64
F128 = "f" * 128
SHA = "sha256:" + F64

Components = Tuple[str, str, Optional[str], Optional[str]]  # domain, path, tag, digest


# --- tables from Docker's tests ---------------------------------------------------------

# input -> (domain, path, tag, digest)
NORMALISED = [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("busybox:1.36", ("docker.io", "library/busybox", "1.36", None)),
    ("docker.io/busybox", ("docker.io", "library/busybox", "latest", None)),
    ("docker.io/library/busybox", ("docker.io", "library/busybox", "latest", None)),
    ("index.docker.io/busybox", ("docker.io", "library/busybox", "latest", None)),
    ("index.docker.io/library/debian", ("docker.io", "library/debian", "latest", None)),
    ("index.docker.io/docker/docker", ("docker.io", "docker/docker", "latest", None)),
    ("docker/docker", ("docker.io", "docker/docker", "latest", None)),
    ("library/debian", ("docker.io", "library/debian", "latest", None)),
    ("library/foo/bar", ("docker.io", "library/foo/bar", "latest", None)),
    ("store/foo/bar", ("docker.io", "store/foo/bar", "latest", None)),
    ("other/library", ("docker.io", "other/library", "latest", None)),
    ("localhost/x", ("localhost", "x", "latest", None)),
    ("localhost:5000/x", ("localhost:5000", "x", "latest", None)),
    ("localhost:5000", ("docker.io", "library/localhost", "5000", None)),
    ("test_com", ("docker.io", "library/test_com", "latest", None)),
    ("test_com/foo", ("docker.io", "test_com/foo", "latest", None)),
    ("test.com:tag", ("docker.io", "library/test.com", "tag", None)),
    ("test.com:5000", ("docker.io", "library/test.com", "5000", None)),
    ("test.com/repo:tag", ("test.com", "repo", "tag", None)),
    ("test.com:8080/foo", ("test.com:8080", "foo", "latest", None)),
    ("test-com:8080/foo", ("test-com:8080", "foo", "latest", None)),
    ("test:5000/repo", ("test:5000", "repo", "latest", None)),
    ("test:5000/repo:tag", ("test:5000", "repo", "tag", None)),
    ("test:5000/repo@" + SHA, ("test:5000", "repo", None, SHA)),
    ("test:5000/repo:tag@" + SHA, ("test:5000", "repo", "tag", SHA)),
    ("lowercase:Uppercase", ("docker.io", "library/lowercase", "Uppercase", None)),
    ("sub-dom1.foo.com/bar/baz/quux", ("sub-dom1.foo.com", "bar/baz/quux", "latest", None)),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None),
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        ("b.gcr.io", "test.example.com/my-app", "test.example.com", None),
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", ("xn--n3h.com", "myimage", "xn--n3h.com", None)),
    ("xn--n3h.com:18080/foo", ("xn--n3h.com:18080", "foo", "latest", None)),
    (
        "xn--7o8h.com/myimage:xn--7o8h.com@sha512:" + F128,
        ("xn--7o8h.com", "myimage", "xn--7o8h.com", "sha512:" + F128),
    ),
    ("foo_bar.com:8080", ("docker.io", "library/foo_bar.com", "8080", None)),
    ("foo/foo_bar.com:8080", ("docker.io", "foo/foo_bar.com", "8080", None)),
    ("192.168.1.1", ("docker.io", "library/192.168.1.1", "latest", None)),
    ("192.168.1.1:tag", ("docker.io", "library/192.168.1.1", "tag", None)),
    ("192.168.1.1:5000", ("docker.io", "library/192.168.1.1", "5000", None)),
    ("192.168.1.1/repo", ("192.168.1.1", "repo", "latest", None)),
    ("192.168.1.1:5000/repo", ("192.168.1.1:5000", "repo", "latest", None)),
    ("192.168.1.1:5000/repo:5050", ("192.168.1.1:5000", "repo", "5050", None)),
    ("192.168.0.1:8/debian", ("192.168.0.1:8", "debian", "latest", None)),
    ("127.0.0.1:8000/private/moonbase", ("127.0.0.1:8000", "private/moonbase", "latest", None)),
    ("[2001:db8::1]/repo", ("[2001:db8::1]", "repo", "latest", None)),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", ("[2001:db8:1:2:3:4:5:6]", "repo", "tag", None)),
    ("[2001:db8::1]:5000/repo", ("[2001:db8::1]:5000", "repo", "latest", None)),
    ("[2001:db8::1]:5000/repo:tag", ("[2001:db8::1]:5000", "repo", "tag", None)),
    ("[2001:db8::1]:5000/repo@" + SHA, ("[2001:db8::1]:5000", "repo", None, SHA)),
    ("[2001:db8::1]:5000/repo:tag@" + SHA, ("[2001:db8::1]:5000", "repo", "tag", SHA)),
    ("[2001:db8::]:5000/repo", ("[2001:db8::]:5000", "repo", "latest", None)),
    ("[::1]:5000/repo", ("[::1]:5000", "repo", "latest", None)),
    ("[fc00::1]:5000/docker/docker", ("[fc00::1]:5000", "docker/docker", "latest", None)),
    ("Docker/docker", ("Docker", "docker", "latest", None)),
    ("DOCKER/docker", ("DOCKER", "docker", "latest", None)),
    ("Foo/bar", ("Foo", "bar", "latest", None)),
    ("Asdf.com/foo/bar", ("Asdf.com", "foo/bar", "latest", None)),
    (
        "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        (
            "docker.io",
            "library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "latest",
            None,
        ),
    ),
    (
        "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",  # 63 digits
        (
            "docker.io",
            "library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
            "latest",
            None,
        ),
    ),
    (
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        (
            "docker.io",
            "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "latest",
            None,
        ),
    ),
    ("docker---rules/docker", ("docker.io", "docker---rules/docker", "latest", None)),
    ("dock__er/docker", ("docker.io", "dock__er/docker", "latest", None)),
    ("d/docker", ("docker.io", "d/docker", "latest", None)),
    (
        "registry.io/foo/project--id.module--name.ver---sion--name",
        ("registry.io", "foo/project--id.module--name.ver---sion--name", "latest", None),
    ),
    (
        "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
        (
            "docker.io",
            "library/busybox",
            "latest",
            "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
        ),
    ),
    ("x@sha384:" + "0" * 96, ("docker.io", "library/x", None, "sha384:" + "0" * 96)),
    (
        "a/" * 127 + "a:tag-puts-this-over-max",
        ("docker.io", "a/" * 127 + "a", "tag-puts-this-over-max", None),
    ),
    ("example.com/" + "a" * 255 + ":tag", ("example.com", "a" * 255, "tag", None)),
    ("x:" + "T" * 128, ("docker.io", "library/x", "T" * 128, None)),
]

# input -> a fragment of the expected message
INVALID = [
    ("", "empty"),
    (":justtag", "empty component"),
    ("@" + SHA, "empty component"),
    ("repo@sha256:ffffffffffffffffffffffffffffffffff", "64 hex digits"),
    ("validname@invaliddigest:" + F64, "unsupported digest algorithm"),
    ("x@SHA256:" + F64, "unsupported digest algorithm"),
    ("x@sha256:" + F64.upper(), "lowercase"),
    ("x@sha256:" + F64 + "0", "64 hex digits"),
    ("x@sha512:" + F64, "128 hex digits"),
    ("x@sha256", "invalid digest"),
    ("x@", "invalid digest"),
    ("x@sha256:" + F64 + "@sha256:" + F64, "invalid digest"),
    ("Uppercase:tag", "repository name must be lowercase"),
    ("Foo", "repository name must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"),
    ("docker/Docker", "repository name must be lowercase"),
    ("docker.io/docker/Docker", "repository name must be lowercase"),
    ("domain/" + "a" * 256 + ":tag", "255 characters"),
    ("a/" * 128 + "a:tag", "255 characters"),
    (
        "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "x/docker",
        "255 characters",
    ),
    ("aa/asdf$$^/aa", "invalid repository name component"),
    ("https://github.com/docker/docker", "invalid registry domain"),
    ("-docker", "invalid repository name component"),
    ("-docker/docker", "invalid repository name component"),
    ("docker-/docker", "invalid repository name component"),
    ("-docker-/docker", "invalid repository name component"),
    ("-docker.io/docker/docker", "invalid registry domain"),
    ("docker///docker", "empty component"),
    ("docker.io/docker///docker", "empty component"),
    ("docker/", "empty component"),
    ("____/____", "invalid repository name component"),
    ("_docker/_docker", "invalid repository name component"),
    ("dock..er/docker", "invalid registry domain"),
    ("dock_.er/docker", "invalid registry domain"),
    ("dock-.er/docker", "invalid registry domain"),
    ("[fc00::1]", "invalid repository name component"),
    ("[fc00::1]:5000", "invalid repository name component"),
    ("[2001:db8::1]:tag", "invalid repository name component"),
    ("fc00::1:5000/debian", "invalid registry domain"),
    ("[fe80::1%eth0]:5000/debian", "invalid registry domain"),
    ("[fe80::1%@invalidzone]:5000/repo", "invalid"),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid registry domain"),
    ("test.com:http/bar", "invalid registry domain"),
    ("bad_hostname.com:8080/myapp:tag", "invalid registry domain"),
    ("registry.com:8080/myapp:invalid~tag", "invalid tag"),
    ("registry.com:8080/myapp@2bad", "invalid digest"),
    ("x:-tag", "invalid tag"),
    ("x:.tag", "invalid tag"),
    ("x:a:b", "invalid tag"),
    ("x:" + "a" * 129, "128 characters"),
    ("x:é", "invalid tag"),
    ("x:a\n", "invalid tag"),
    ("busybox\n", "invalid repository name component"),
    (" busybox", "invalid repository name component"),
    ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "image ID"),
    # Docker parses this into a reference with an empty domain, which no registry serves.
    ("foo_bar.com/x", "invalid registry domain"),
]


@pytest.mark.parametrize("text, expected", NORMALISED, ids=[t[:60] for t, _ in NORMALISED])
def test_parse_normalises_like_docker(text: str, expected: Components) -> None:
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text, fragment", INVALID, ids=[t[:60] for t, _ in INVALID])
def test_parse_refuses_what_docker_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("invalid reference ")


def test_invalid_reference_is_a_value_error_naming_input_and_reason() -> None:
    expected = r"^invalid reference 'Foo': repository name must be lowercase$"
    with pytest.raises(ValueError, match=expected):
        Reference.parse("Foo")


def test_huge_input_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse("a" * 100_000 + "!")
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("value", [None, b"busybox", 3, ["busybox"]])
def test_parse_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidReference, match="expected a string"):
        Reference.parse(value)  # type: ignore[arg-type]


# (familiar, repository) pairs from normalize_test.go's TestParseRepositoryInfo
FAMILIAR = [
    ("fooo/bar", "docker.io/fooo/bar"),
    ("ubuntu", "docker.io/library/ubuntu"),
    ("nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"),
    ("other/library", "docker.io/other/library"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase"),
    ("example.com/private/moonbase", "example.com/private/moonbase"),
    ("example.com:8000/privatebasee", "example.com:8000/privatebasee"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base"),
    ("foo", "docker.io/library/foo"),
    ("library/foo/bar", "docker.io/library/foo/bar"),
    ("store/foo/bar", "docker.io/store/foo/bar"),
    ("Foo/bar", "Foo/bar"),
    ("FOO/bar", "FOO/bar"),
]


@pytest.mark.parametrize("familiar, repository", FAMILIAR)
def test_familiar_and_full_names_match_docker(familiar: str, repository: str) -> None:
    for spelling in (familiar, repository):
        ref = Reference.parse(spelling)
        assert ref.repository == repository
        assert ref.familiar == familiar + ":latest"
        assert str(ref) == repository + ":latest"


def test_str_drops_the_tag_when_a_digest_pins_the_image() -> None:
    ref = Reference.parse("busybox:1.36@" + SHA)
    assert ref.tag == "1.36"
    assert str(ref) == "docker.io/library/busybox@" + SHA
    assert ref.familiar == "busybox:1.36@" + SHA


def test_digest_reference_has_no_tag() -> None:
    ref = Reference.parse("alpine@" + SHA)
    assert ref.tag is None
    assert str(ref) == "docker.io/library/alpine@" + SHA


def test_docker_hub_is_served_by_registry_1() -> None:
    hub = Reference.parse("busybox")
    assert hub.is_docker_hub
    assert hub.api_host == "registry-1.docker.io"
    local = Reference.parse("localhost:5000/x")
    assert not local.is_docker_hub
    assert local.api_host == "localhost:5000"
    assert Reference.parse("[::1]:5000/x").api_host == "[::1]:5000"


def test_with_tag_and_with_digest_keep_the_other_and_validate() -> None:
    ref = Reference.parse("busybox:1")
    pinned = ref.with_digest(SHA)
    assert (pinned.tag, pinned.digest) == ("1", SHA)
    assert pinned.with_tag("2").digest == SHA
    assert ref.with_tag("2") == Reference.parse("busybox:2")
    with pytest.raises(InvalidReference, match="invalid tag"):
        ref.with_tag("-bad")
    with pytest.raises(InvalidReference, match="64 hex digits"):
        ref.with_digest("sha256:abc" + "0" * 29)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (dict(domain="index.docker.io", path="library/x"), "docker.io"),
        (dict(domain="docker.io", path="busybox"), "library/busybox"),
        (dict(domain="myregistry", path="x"), "would be read as a path"),
        (dict(domain="bad_domain.com", path="x"), "invalid registry domain"),
        (dict(domain="example.com", path="X"), "lowercase"),
        (dict(domain="example.com", path="x", tag=""), "invalid tag"),
        (dict(domain="example.com", path="x", digest="sha256:" + "0" * 40), "64 hex digits"),
        (dict(domain="example.com", path="x", digest="sha256:0"), "invalid digest"),
        (dict(domain=5, path="x"), "must be a string"),
    ],
)
def test_constructor_refuses_components_that_do_not_round_trip(
    fields: Dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidReference, match=re.escape(fragment)):
        Reference(**fields)


# --- properties ---------------------------------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(0, 99999).map(lambda p: f":{p}")


@st.composite
def domains(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["hub", "localhost", "dotted", "ported", "upper", "ipv4", "ipv6"]))
    if kind == "hub":
        return "docker.io"
    if kind == "localhost":
        return "localhost" + draw(st.one_of(st.just(""), _port))
    if kind == "dotted":
        labels = draw(st.lists(_label, min_size=2, max_size=4))
        return ".".join(labels) + draw(st.one_of(st.just(""), _port))
    if kind == "ported":
        return draw(_label) + draw(_port)
    if kind == "upper":
        return draw(_label.filter(lambda s: s != s.lower()))
    if kind == "ipv4":
        octets = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        return ".".join(map(str, octets)) + draw(st.one_of(st.just(""), _port))
    group = st.from_regex(r"[0-9a-fA-F]{1,4}", fullmatch=True)
    groups = draw(st.lists(group, min_size=1, max_size=8))
    address = ":".join(groups) if len(groups) == 8 else ":".join(groups) + "::"
    return f"[{address}]" + draw(st.one_of(st.just(""), _port))


_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_digests = st.one_of(
    st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    st.from_regex(r"sha384:[0-9a-f]{96}", fullmatch=True),
    st.from_regex(r"sha512:[0-9a-f]{128}", fullmatch=True),
)


@st.composite
def references(draw: st.DrawFn) -> Reference:
    """Valid normalised references, built from valid components."""
    domain = draw(domains())
    components = draw(st.lists(path_components(), min_size=1, max_size=4))
    if domain == "docker.io" and len(components) == 1:
        components.insert(0, "library")
    path = "/".join(components)
    assume(len(path) <= 255)
    tag = draw(st.one_of(st.none(), _tags))
    digest = draw(st.one_of(st.none(), _digests))
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _without_tag_if_pinned(ref: Reference) -> Reference:
    return attrs.evolve(ref, tag=None) if ref.digest else ref


@given(references())
def test_reference_built_from_valid_components_parses_back_to_them(ref: Reference) -> None:
    assert Reference.parse(str(ref)) == _without_tag_if_pinned(ref)


@given(references())
def test_full_text_with_tag_and_digest_parses_back_to_all_components(ref: Reference) -> None:
    text = ref.repository
    if ref.tag is not None:
        text += ":" + ref.tag
    if ref.digest is not None:
        text += "@" + ref.digest
    assert Reference.parse(text) == ref


@given(references())
def test_familiar_form_parses_to_the_same_reference(ref: Reference) -> None:
    assert Reference.parse(ref.familiar) == ref


# Fragments that make up the interesting corners of the grammar.
_FRAGMENTS = [
    "docker.io", "index.docker.io", "localhost", "example.com", "Ex", ":5000", ":", "/", "@",
    "a", "b0", "A", "_", "__", "-", "--", ".", "..", "library", "latest", "[::1]", "[", "]",
    "sha256:", "sha512:", "sha384:", "md5:", F64, F64.upper(), "f" * 63, F128, "%", " ",
    "\n", "é", "0", "x" * 130,
]
_fragment_text = st.lists(st.sampled_from(_FRAGMENTS), min_size=0, max_size=8).map("".join)


@given(st.one_of(st.text(max_size=40), _fragment_text))
def test_parse_raises_only_invalid_reference(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        return
    # What parses, round-trips.
    assert Reference.parse(str(ref)) == _without_tag_if_pinned(ref)


def _full_text(ref: Reference) -> str:
    return (
        ref.repository
        + (f":{ref.tag}" if ref.tag is not None else "")
        + (f"@{ref.digest}" if ref.digest is not None else "")
    )


@st.composite
def near_valid_text(draw: st.DrawFn) -> str:
    """A valid reference (full or familiar) with one slice replaced by a fragment."""
    ref = draw(references())
    text = draw(st.sampled_from([_full_text(ref), ref.familiar, str(ref)]))
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 3)))
    return text[:start] + draw(st.sampled_from(_FRAGMENTS + [""])) + text[end:]


@given(st.one_of(st.text(max_size=40), _fragment_text, near_valid_text()))
def test_parse_agrees_with_the_docker_grammar(text: str) -> None:
    expected = _docker_oracle(text)
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        assert expected is None
    else:
        assert (ref.domain, ref.path, ref.tag, ref.digest) == expected


Draw = Callable[[st.SearchStrategy[Any]], Any]
Mutation = Callable[[Draw, str, Reference], str]


def _insert(chars: str) -> Mutation:
    def mutate(draw: Draw, text: str, ref: Reference) -> str:
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(chars)) + text[at:]

    return mutate


def _replace_path(new: Callable[[str], str]) -> Mutation:
    def mutate(draw: Draw, text: str, ref: Reference) -> str:
        return text.replace(ref.repository, f"{ref.domain}/{new(ref.path)}", 1)

    return mutate


def _uppercase_in_path(draw: Draw, text: str, ref: Reference) -> str:
    letters = [i for i, c in enumerate(ref.path) if c.isalpha()]
    assume(letters)
    i = draw(st.sampled_from(letters))
    path = ref.path[:i] + ref.path[i].upper() + ref.path[i + 1 :]
    return text.replace(ref.repository, f"{ref.domain}/{path}", 1)


def _bad_tag(draw: Draw, text: str, ref: Reference) -> str:
    tag = draw(st.sampled_from(["." + "a", "-a", "a" * 129, "a:b", "", "a/b", "é"]))
    return ref.repository + ":" + tag + (f"@{ref.digest}" if ref.digest else "")


def _bad_digest(draw: Draw, text: str, ref: Reference) -> str:
    digest = ref.digest or "sha256:" + F64
    bad = draw(
        st.sampled_from(
            [
                digest[:-1],
                digest + "0",
                digest.upper(),
                "md5:" + "0" * 32,
                digest.split(":")[1],
                "sha256:",
            ]
        )
    )
    return ref.repository + "@" + bad


_MUTATIONS = [
    _insert("!$ %\n\t#&*,;<=>?^`{|}~\"'\\é\x00"),
    _replace_path(lambda p: p + "/"),
    _replace_path(lambda p: "/" + p),
    _replace_path(lambda p: p.replace("/", "//", 1) if "/" in p else p + "//x"),
    _replace_path(lambda p: "-" + p),
    _replace_path(lambda p: p + "_"),
    _replace_path(lambda p: "a" * 256),
    _uppercase_in_path,
    _bad_tag,
    _bad_digest,
]


@given(references(), st.sampled_from(_MUTATIONS), st.data())
def test_invalid_references_always_raise_invalid_reference(
    ref: Reference, mutation: Mutation, data: st.DataObject
) -> None:
    text = mutation(data.draw, _full_text(ref), ref)
    with pytest.raises(InvalidReference):
        Reference.parse(text)


# --- the oracle: Docker's algorithm written from its regular expressions -----------------
# distribution/reference's referencePat and anchoredNamePat (Go's leftmost-first submatch
# semantics are Python's), ParseNormalizedNamed's steps, and go-digest's validation.

_DC = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_AND_PORT = rf"(?:{_DC}(?:\.{_DC})*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?"
_PC = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REMOTE = rf"{_PC}(?:/{_PC})*"
_NAME = rf"(?:{_DOMAIN_AND_PORT}/)?{_REMOTE}"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
_ANCHORED_NAME_RE = re.compile(rf"(?:({_DOMAIN_AND_PORT})/)?({_REMOTE})")
_GO_DIGEST = {"sha256": 64, "sha384": 96, "sha512": 128}


def _docker_oracle(s: str) -> Optional[Components]:
    if s == "" or re.fullmatch(r"[a-f0-9]{64}", s):
        return None
    if "/" not in s:
        domain, remainder = "docker.io", "library/" + s
    else:
        first, rest = s.split("/", 1)
        if first == "localhost":
            domain, remainder = first, rest
        elif first == "index.docker.io":
            domain, remainder = "docker.io", rest
        elif "." in first or ":" in first or first.lower() != first:
            domain, remainder = first, rest
        else:
            domain, remainder = "docker.io", s
        if domain == "docker.io" and "/" not in remainder:
            remainder = "library/" + remainder
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        return None
    m = _REFERENCE_RE.fullmatch(domain + "/" + remainder)
    if m is None:
        return None
    nm = _ANCHORED_NAME_RE.fullmatch(m.group(1))
    assert nm is not None
    ref_domain, path = nm.group(1) or "", nm.group(2)
    if len(path) > 255:
        return None
    tag, digest = m.group(2), m.group(3)
    if digest is not None:
        algorithm, encoded = digest.split(":", 1)
        if _GO_DIGEST.get(algorithm) != len(encoded) or encoded != encoded.lower():
            return None
    if ref_domain == "":  # Docker accepts it; no registry can serve it: isobox refuses.
        return None
    if tag is None and digest is None:
        tag = "latest"
    return ref_domain, path, tag, digest


def test_oracle_reproduces_dockers_domainless_parse() -> None:
    # Sanity check of the oracle itself: this is where Docker yields an empty domain.
    m = _REFERENCE_RE.fullmatch("foo_bar.com/x")
    assert m is not None
    nm = _ANCHORED_NAME_RE.fullmatch(m.group(1))
    assert nm is not None and nm.group(1) is None


@pytest.mark.parametrize("text, expected", NORMALISED, ids=[t[:60] for t, _ in NORMALISED])
def test_oracle_agrees_with_the_table(text: str, expected: Components) -> None:
    assert _docker_oracle(text) == expected


@pytest.mark.parametrize("text", [t for t, _ in INVALID])
def test_oracle_refuses_the_invalid_table(text: str) -> None:
    assert _docker_oracle(text) is None

