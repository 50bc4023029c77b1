"""A container's options have one JSON form (runtime/config.py): what `isobox run -d` hands
its supervisor and what options.json records is the `ContainerConfig` itself, read back
equal, never a second spelling of the options."""

from __future__ import annotations

import json

import attrs
import pytest

import isobox
from isobox.runtime.config import ContainerConfig, config_from_json, config_to_json

pytestmark = pytest.mark.unit


def every_option() -> ContainerConfig:
    return ContainerConfig.from_options(
        "sh -c 'echo hi'", entrypoint=["/bin/tini", "--"], name="web", env={"A": "1", "B": "x=y"},
        workdir="/srv", user="1000:1000", hostname="box", init=True, read_only=True, network="host",
        userns=False, rlimits={"nofile": (100, 200), "core": 0},
        mounts=[isobox.Bind("/etc", "/host-etc", read_only=True), isobox.Volume("data", "/data"),
                isobox.Tmpfs("/tmp", size="10m", mode=0o1700, exec=True)],
        tty=True, tty_size=(30, 100), seccomp=False, memory="256m", pids_limit=-1, cpus=0.5,
        devices=["/dev/null:/dev/mynull:r"], log_max_size="1m", log_max_files=2)


def test_a_config_survives_its_json_form_unchanged():
    config = every_option()
    doc = json.loads(json.dumps(config_to_json(config)))  # plain JSON, through text
    assert config_from_json(doc) == config
    assert config_from_json(config_to_json(ContainerConfig())) == ContainerConfig()


def test_the_json_form_is_the_configs_fields_in_dockers_spellings():
    doc = config_to_json(every_option())
    assert set(doc) == {f.name for f in attrs.fields(ContainerConfig)}
    assert doc["command"] == ["sh", "-c", "echo hi"]
    assert doc["env"] == ["A=1", "B=x=y"]
    assert doc["limits"] == {"memory": 256 << 20, "pids": -1, "cpus": 0.5}  # memory= became limits once
    assert doc["rlimits"] == {"nofile": [100, 200], "core": [0, 0]}
    assert doc["log"] == {"max_size": 1_000_000, "max_files": 2}  # Docker's units for logs
    assert doc["mounts"][0] == {"type": "bind", "source": "/etc", "target": "/host-etc", "read_only": True}


@pytest.mark.parametrize("doc, words", [
    ([], "JSON object"),
    ({"memory": "1g"}, "unknown field"),
    ({"mounts": [{"type": "nfs", "target": "/x"}]}, "unknown mount type"),
    ({"limits": {"pids": "many"}}, "pids_limit"),
    ({"workdir": "relative"}, "absolute"),
    ({"devices": [{"path": "/dev/x"}]}, "malformed"),
])
def test_a_malformed_config_is_refused_naming_what(doc, words):
    with pytest.raises(isobox.InvalidOption, match=words):
        config_from_json(doc)
