"""Image configurations as Docker reads them: hostile shapes refused at pull (moby decodes
the config into typed Go structs and refuses the pull on any wrong type), tolerated shapes
read as Go reads them, and a StopSignal that names no signal refused when a container is
made (`ImageConfig.stop_signum`), never later when it is stopped.

Configs are served by the real registry (`registry` fixture); the decoder itself gets a
property test over arbitrary JSON."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isobox.errors import InvalidImage, InvalidOption, IsoboxError
from isobox.images.image import Image, ImageConfig
from isobox.images.store import ImageRecord, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def config_doc(section: Any, **top: Any) -> Dict[str, Any]:
    """A zero-layer image config whose ``config`` object is ``section``."""
    return {"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": section, **top}


_counter = iter(range(10**6))


def pull_config(registry: Any, store: Store, doc: Any) -> Image:
    """Push a zero-layer image with the config document ``doc`` and pull it."""
    repo = f"isobox-test/config-{next(_counter)}"
    registry.push_image(repo, "latest", [], doc)
    return Image.pull(f"{registry.host}/{repo}:latest", store=store)


# -- refused at pull, as moby refuses it ---------------------------------------------------


@pytest.mark.parametrize("section, field", [
    ({"Labels": ["a=b"]}, "Labels"),
    ({"Labels": {"a": 1}}, "Labels"),
    ({"Entrypoint": [1, 2]}, "Entrypoint"),
    ({"Entrypoint": {"sh": "-c"}}, "Entrypoint"),
    ({"Cmd": [["sh"]]}, "Cmd"),
    ({"Env": {"PATH": "/bin"}}, "Env"),
    ({"Env": "PATH=/bin"}, "Env"),
    ({"User": 0}, "User"),
    ({"WorkingDir": ["/"]}, "WorkingDir"),
    ({"ExposedPorts": ["80/tcp"]}, "ExposedPorts"),
    ({"ExposedPorts": {"80/tcp": "yes"}}, "ExposedPorts"),
    ({"Volumes": {"/data": 1}}, "Volumes"),
    ({"StopSignal": 15}, "StopSignal"),
    ({"Healthcheck": {"Interval": "30s"}}, "Healthcheck.Interval"),
    ({"Healthcheck": {"Test": "true"}}, "Healthcheck.Test"),
    ({"StopTimeout": 1.5}, "StopTimeout"),
    ({"labels": ["a"]}, "Labels"),  # Go matches keys case-insensitively
])
def test_wrongly_typed_config_field_is_refused_at_pull(registry, store, section, field):
    with pytest.raises(InvalidImage) as info:
        pull_config(registry, store, config_doc(section))
    message = str(info.value)
    assert f"config.{field}" in message and "config sha256:" in message
    assert store.records() == [] and store.tags() == []


@pytest.mark.parametrize("top, field", [
    ({"created": "yesterday"}, "created"),
    ({"created": 1700000000}, "created"),
    ({"history": [{"created_by": ["RUN x"]}]}, "history[0].created_by"),
    ({"container_config": {"Cmd": 5}}, "container_config.Cmd"),
    ({"os.features": "sse4"}, "os.features"),
    ({"Size": "big"}, "Size"),
])
def test_wrongly_typed_document_field_is_refused_at_pull(registry, store, top, field):
    with pytest.raises(InvalidImage, match=rf"{field.replace('[', '.').replace(']', '.')}"):
        pull_config(registry, store, config_doc({}, **top))


def test_config_section_that_is_not_an_object_is_refused(registry, store):
    with pytest.raises(InvalidImage, match="config must be an object, got a list"):
        pull_config(registry, store, config_doc(["sh"]))


def test_more_history_layers_than_diff_ids_is_refused(registry, store):
    doc = config_doc({}, history=[{"created_by": "ADD x"}])
    with pytest.raises(InvalidImage, match="too many non-empty layers"):
        pull_config(registry, store, doc)


# -- read as Docker reads it ---------------------------------------------------------------


def test_config_fields_are_read_as_go_decodes_them(registry, store):
    section = {
        "cmd": "echo hi",  # case-insensitive key; StrSlice takes one string
        "Entrypoint": None,
        "Env": ["A=1", None],
        "Labels": {"a": None, "b": "2"},
        "ExposedPorts": {"80/tcp": {}, "53/udp": None},
        "ſtopſignal": "SIGUSR1",  # U+017F folds to "s" in Go's key matching
        "NotAField": {"anything": [1, 2.5, None]},
    }
    image = pull_config(registry, store, config_doc(section))
    config = image.config
    assert config.cmd == ("echo hi",)
    assert config.entrypoint is None
    assert config.env == ("A=1", "")
    assert config.labels == {"a": "", "b": "2"}
    assert config.exposed_ports == ("53/udp", "80/tcp")
    assert config.stop_signal == "SIGUSR1" and config.stop_signum == signal.SIGUSR1
    again = Image.get(f"{image.reference}", store=store)
    assert again.config == config  # read back from the store the same way


def test_later_occurrence_of_a_field_wins_as_in_go(registry, store):
    raw = (b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},'
           b'"config":{"Cmd":["first"],"CMD":["second"],"User":"app","user":null,'
           b'"Labels":{"a":"1"},"labels":{"b":"2"}}}')
    repo = "isobox-test/config-dupes"
    config_digest = registry.push_blob(repo, raw)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": len(raw)}, "layers": []}
    registry.push_manifest(repo, "latest", json.dumps(manifest).encode(), manifest["mediaType"])
    config = Image.pull(f"{registry.host}/{repo}:latest", store=store).config
    assert config.cmd == ("second",)
    assert config.user == "app"  # null leaves a Go string as it was
    assert config.labels == {"a": "1", "b": "2"}  # Go merges a map given twice


def test_lone_surrogates_and_bad_utf8_become_replacement_characters(registry, store):
    raw = (b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},'
           b'"config":{"Env":["A=\\ud800", "B=\xff"]}}')
    repo = "isobox-test/config-utf8"
    config_digest = registry.push_blob(repo, raw)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": len(raw)}, "layers": []}
    registry.push_manifest(repo, "latest", json.dumps(manifest).encode(), manifest["mediaType"])
    config = Image.pull(f"{registry.host}/{repo}:latest", store=store).config
    assert config.env == ("A=\ufffd", "B=\ufffd")
    assert all(e.encode() for e in config.env)  # encodable: they reach execve as UTF-8


# -- StopSignal ------------------------------------------------------------------------------


def test_bogus_stop_signal_is_pulled_but_refused_when_a_container_is_made(registry, store):
    # Docker pulls it and creates the container; podman refuses to create it. isobox
    # refuses where containers are made: `stop_signum`, read at construction.
    image = pull_config(registry, store, config_doc({"StopSignal": "SIGBOGUS"}))
    assert image.config.stop_signal == "SIGBOGUS"
    with pytest.raises(InvalidImage, match="StopSignal 'SIGBOGUS' is not a signal") as info:
        image.config.stop_signum
    assert image.id is not None and image.id in str(info.value)


@pytest.mark.unit
@pytest.mark.parametrize("text, number", [
    (None, signal.SIGTERM), ("", signal.SIGTERM),  # unset: Docker's default
    ("SIGQUIT", signal.SIGQUIT), ("quit", signal.SIGQUIT), ("9", 9), ("+2", 2),
    ("SIGRTMIN+3", 37), ("RTMAX", 64), ("sigchld", signal.SIGCHLD),
])
def test_stop_signal_is_read_as_docker_parses_it(text, number):
    assert ImageConfig(stop_signal=text).stop_signum == number


@pytest.mark.unit
@pytest.mark.parametrize("text", ["0", "65", "-9", "SIGSIGTERM", "TERM ", "SIG", "15.0",
                                  "SIGRTMIN+16", "\uff11\uff15"])
def test_stop_signal_naming_no_signal_is_invalid_image(text):
    with pytest.raises(InvalidImage, match="not a signal"):
        ImageConfig(stop_signal=text).stop_signum


# -- the store and direct construction -------------------------------------------------------


def test_malformed_config_read_back_from_the_store_is_invalid_image(registry, store):
    image = pull_config(registry, store, config_doc({"Cmd": ["sh"]}))
    record = store.read_image(image.digest)
    assert record is not None
    doc = dict(record.config)
    doc["config"] = {"Labels": ["a"]}  # as a store written by hand (or an old isobox) holds
    store.write_image(ImageRecord(
        digest=record.digest, media_type=record.media_type, config_digest=record.config_digest,
        config=doc, layers=record.layers, platform=record.platform, size=record.size))
    with pytest.raises(InvalidImage, match="config.Labels must be an object of strings"):
        Image.get(image.reference, store=store)


@pytest.mark.unit
@pytest.mark.parametrize("options", [
    {"entrypoint": [1, 2]}, {"cmd": "sh"}, {"env": {"A": "1"}}, {"labels": ["a=b"]},
    {"labels": {"a": 1}}, {"stop_signal": 15}, {"user": 0}, {"working_dir": None},
])
def test_image_config_built_in_python_refuses_wrong_types(options):
    with pytest.raises(InvalidOption):
        ImageConfig(**options)


# -- any JSON ----------------------------------------------------------------------------

FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
          "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild", "StopTimeout",
          "ArgsEscaped", "Tty", "env", "CMD", "labels", "stopsignal"]
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
config_sections = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values,
                                  max_size=6) | json_values


def check_valid(config: ImageConfig) -> None:
    assert all(isinstance(e, str) for e in config.env)
    for command in (config.cmd, config.entrypoint):
        assert command is None or all(isinstance(a, str) for a in command)
    assert isinstance(config.working_dir, str) and isinstance(config.user, str)
    assert all(isinstance(p, str) for p in config.exposed_ports)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.labels.items())
    for text in (*config.env, *(config.cmd or ()), *config.labels.values(), config.user):
        text.encode()  # no lone surrogates
    try:
        assert 1 <= config.stop_signum <= 64
    except InvalidImage:
        pass
    assert ImageConfig.from_oci(config.to_oci()) == config


@settings(max_examples=400)
@given(section=config_sections)
def test_any_config_section_is_an_image_config_or_invalid_image(section):
    try:
        config = ImageConfig.from_oci(section)
    except InvalidImage:
        return
    check_valid(config)


@pytest.mark.unit
@settings(max_examples=300)
@given(raw=st.binary(max_size=64) | config_sections.map(
    lambda s: json.dumps(config_doc(s)).encode()))
def test_any_bytes_as_a_config_document_parse_or_raise_invalid_image(raw):
    from isobox.images.image import _check_config

    try:
        doc = _check_config(raw, 0, "config sha256:x of test")
    except InvalidImage:
        return
    check_valid(ImageConfig.from_oci(doc.get("config")))


@settings(max_examples=25)
@given(section=config_sections)
def test_any_config_the_registry_serves_pulls_or_raises_invalid_image(registry, tmp_path_factory,
                                                                      section):
    store = Store.open(tmp_path_factory.mktemp("store"))
    try:
        image = pull_config(registry, store, config_doc(section))
    except InvalidImage:
        assert store.records() == []
        return
    except IsoboxError as exc:  # pragma: no cover - the property's failure
        raise AssertionError(f"not InvalidImage: {exc!r}") from exc
    check_valid(image.config)


@pytest.mark.unit
def test_a_config_with_a_healthcheck_reads_again_from_its_record() -> None:
    """What the store records is the decoded document (numbers as ints); reading the
    image back decodes its config section again. A HEALTHCHECK's durations made every
    image that has one unreadable (InvalidImage: "must be an integer, got int")."""
    from isobox.images import ociconfig

    raw = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                      "config": {"Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000,
                                                                "Retries": 3}}}).encode()
    doc = ociconfig.load(raw, "config of a test")
    config = ImageConfig.from_oci(doc["config"], source="config of a test")
    assert config.cmd == ("sh",)
    with pytest.raises(InvalidImage, match="Interval must be an integer"):
        ImageConfig.from_oci({"Healthcheck": {"Interval": True}})
