"""Digests: one grammar for the reference parser, the registry client and the store.

A digest a reference may carry is one the store can file and the client can verify, and
the other way round: no component refuses what another accepted (the store used to know
only sha256 and sha512, so a sha384 reference died there as a DigestMismatch).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from isobox.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidReference,
    RegistryError,
    UnsupportedManifest,
)
from isobox.images.digest import Hasher, chain_ids, check, compute, is_digest, matches, problem
from isobox.images.image import Image
from isobox.images.manifest import Descriptor, check_digest
from isobox.images.reference import Reference
from isobox.images.store import Store

pytestmark = pytest.mark.unit  # every test here is pure (tests/fixtures/seam.py)

LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@pytest.mark.parametrize("algorithm", sorted(LENGTHS))
def test_uncached_digest_reference_of_every_algorithm_is_image_not_found(tmp_path, algorithm):
    digest = f"{algorithm}:" + "a" * LENGTHS[algorithm]
    with pytest.raises(ImageNotFound):
        Image.get("busybox@" + digest, store=tmp_path / "store")
    with pytest.raises(ImageNotFound):
        Image.pull("busybox@" + digest, offline=True, store=tmp_path / "store")


@pytest.mark.parametrize("digest", [
    "md5:" + "a" * 32, "sha384:" + "a" * 95, "sha256:" + "A" * 64, "sha512:" + "a" * 64,
])
def test_malformed_digest_in_a_reference_is_invalid_reference(tmp_path, digest):
    with pytest.raises(InvalidReference):
        Image.get("busybox@" + digest, store=tmp_path / "store")


# Texts near the grammar: every algorithm Docker knows and some it does not, each with
# hex of a known algorithm's length, or one digit off, sometimes in upper case.
_algorithms = st.sampled_from(["sha256", "sha384", "sha512", "md5", "sha1", "SHA256",
                               "sha256+b64u", "blake3", ""])


@st.composite
def _digest_texts(draw: st.DrawFn) -> str:
    algorithm = draw(_algorithms)
    length = draw(st.sampled_from(sorted(LENGTHS.values()))) + draw(st.sampled_from([0, 0, -1, 1]))
    hexpart = draw(st.text("0123456789abcdef", min_size=length, max_size=length))
    if draw(st.integers(0, 3)) == 0:
        hexpart = hexpart.upper()
    return f"{algorithm}:{hexpart}"


def _parser_accepts(digest: str) -> bool:
    try:
        Reference.parse("busybox@" + digest)
    except InvalidReference:
        return False
    return True


def _store_accepts(digest: str) -> bool:
    store = Store(Path("/store-root"))
    try:
        store.blob_path(digest)
        store.layer_path(digest)
    except DigestMismatch:
        return False
    return True


@given(_digest_texts())
@example("sha384:" + "0" * 96)
def test_reference_parser_and_store_agree_on_every_algorithm(digest):
    assert _parser_accepts(digest) == _store_accepts(digest)


@given(st.text(max_size=140))
def test_reference_parser_and_store_agree_on_any_text(digest):
    assert _parser_accepts(digest) == _store_accepts(digest)


def _descriptor_accepts(digest: str) -> bool:
    doc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": 1}
    try:
        Descriptor.from_oci(doc)
    except RegistryError:
        return False
    return True


@given(_digest_texts())
def test_reference_parser_and_registry_descriptors_agree_on_every_algorithm(digest):
    assert _parser_accepts(digest) == _descriptor_accepts(digest)


def test_registry_content_in_an_algorithm_isobox_cannot_verify_is_unsupported():
    with pytest.raises(UnsupportedManifest, match="unsupported digest algorithm 'md5'"):
        check_digest("md5:" + "a" * 32, "descriptor digest")
    with pytest.raises(RegistryError) as info:
        check_digest("sha256:" + "a" * 63, "descriptor digest")
    assert not isinstance(info.value, UnsupportedManifest)


# -- hashing ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(LENGTHS))
def test_computed_digests_are_digests_of_their_algorithm(algorithm):
    import hashlib

    value = compute(b"content", algorithm)
    assert value == f"{algorithm}:" + hashlib.new(algorithm, b"content").hexdigest()
    assert is_digest(value) and matches(b"content", value) and not matches(b"other", value)


def test_hasher_streams_to_the_same_digest_as_the_whole():
    hasher = Hasher("sha512")
    for part in (b"con", b"", b"tent"):
        hasher.update(part)
    assert hasher.digest == compute(b"content", "sha512")
    assert Hasher.like(hasher.digest).algorithm == "sha512"


def test_hasher_refuses_an_algorithm_isobox_cannot_verify():
    with pytest.raises(ValueError, match="md5"):
        Hasher("md5")


def test_chain_id_of_a_layer_names_it_with_the_layers_below():
    import hashlib

    a, b, c = (compute(x) for x in (b"a", b"b", b"c"))
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []


@pytest.mark.parametrize("value, reason", [
    ("sha256:" + "0" * 63, "64 hex digits"),
    ("sha384:" + "0" * 64, "96 hex digits"),
    ("md5:" + "0" * 32, "unsupported digest algorithm"),
    ("sha256:" + "A" * 64, "lowercase"),
    ("sha256:../../etc/passwd", "invalid digest"),
    (None, "must be a string"),
])
def test_problem_says_why_a_text_is_not_a_digest(value, reason):
    assert reason in problem(value)
    with pytest.raises(DigestMismatch, match=reason):
        check(value, DigestMismatch)
