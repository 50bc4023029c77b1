"""The archive documents' parsers (isobox.images.layout), by property: whatever the input,
a parser returns what the format allows or raises InvalidArchive, and what isobox writes
it reads back the same."""

from __future__ import annotations

import json
import posixpath

import pytest
from hypothesis import given, strategies as st

from isobox.errors import InvalidArchive
from isobox.images import layout
from isobox.images.manifest import OCI_MANIFEST, Descriptor
from isobox.images.reference import Reference

pytestmark = pytest.mark.unit

names = st.text(alphabet=st.sampled_from("ab./\x00-_"), max_size=30)
components = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
references = st.builds(
    lambda host, path, tag: Reference.parse(f"{host}/{path}:{tag}"),
    st.sampled_from(["127.0.0.1:5000", "registry.example", "docker.io"]),
    st.lists(components, min_size=1, max_size=3).map("/".join),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(names)
def test_an_entry_name_never_leaves_the_archive(name):
    try:
        normal = layout.entry_name(name, "a.tar")
    except InvalidArchive as exc:
        assert "a.tar" in str(exc)
        return
    assert not normal.startswith("/") and "\x00" not in normal
    assert ".." not in normal.split("/") and "" not in normal.split("/")
    assert posixpath.normpath(normal) == normal


@given(names, names)
def test_a_link_target_stays_inside_or_is_refused(name, target):
    try:
        inside = layout.link_target(layout.entry_name(name, "a"), target, "a")
    except InvalidArchive:
        return
    assert not inside.startswith("/") and ".." not in inside.split("/")


@given(st.lists(st.tuples(st.lists(references, max_size=3), st.lists(components, max_size=4)),
                max_size=4))
def test_docker_manifest_written_is_read_back(items):
    entries = [layout.DockerEntry(f"{i}.json", tuple(tags), tuple(f"{c}/layer.tar" for c in layers))
               for i, (tags, layers) in enumerate(items)]
    assert layout.parse_docker_manifest(layout.write_docker_manifest(entries), "m") == entries
    repositories = json.loads(layout.write_repositories(entries))
    assert all(isinstance(tags, dict) for tags in repositories.values())


@given(json_values)
def test_any_json_is_a_docker_manifest_or_refused(doc):
    try:
        entries = layout.parse_docker_manifest(json.dumps(doc).encode(), "m")
    except InvalidArchive:
        return
    assert isinstance(doc, list)
    for entry in entries:
        assert all(isinstance(r, Reference) and r.digest is None for r in entry.repo_tags)


@given(st.lists(st.tuples(st.integers(0, 2**40), st.one_of(st.none(), references)), max_size=5))
def test_an_index_written_is_read_back_with_its_names(items):
    pairs = [(Descriptor(media_type=OCI_MANIFEST, digest="sha256:" + f"{i:064x}", size=size),
              str(ref) if ref else None) for i, (size, ref) in enumerate(items)]
    parsed = layout.parse_index(layout.write_index(pairs), "index.json")
    assert [(e.descriptor.digest, e.descriptor.size) for e in parsed] == [
        (d.digest, d.size) for d, _ in pairs]
    assert [str(e.name) if e.name else None for e in parsed] == [n for _, n in pairs]


@given(json_values)
def test_any_json_is_an_index_or_refused(doc):
    try:
        layout.parse_index(json.dumps(doc).encode(), "index.json")
    except InvalidArchive as exc:
        assert "index.json" in str(exc)


@pytest.mark.parametrize("annotations,name", [
    ({layout.REF_NAME: "latest"}, None),  # skopeo's oci:DIR:latest: only a tag
    ({layout.REF_NAME: "example.com/a/b:1"}, "example.com/a/b:1"),
    ({layout.REF_NAME: "latest", layout.CONTAINERD_NAME: "docker.io/library/busybox:1"},
     "docker.io/library/busybox:1"),
    ({layout.REF_NAME: "busybox:1"}, "docker.io/library/busybox:1"),
    ({layout.REF_NAME: "Not A Name"}, None),
    ({layout.REF_NAME: "a/b@sha256:" + "0" * 64}, None),
    (None, None),
])
def test_names_from_index_annotations(annotations, name):
    found = layout.name_of(annotations)
    assert (str(found) if found else None) == name
