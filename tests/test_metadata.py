"""Configuration-only Dockerfile instructions applied to an image config
(isobox.images.metadata), as Docker's builder and `docker commit --change` apply them."""

from __future__ import annotations

import pytest

from isobox.images.dockerfile import DockerfileError, parse
from isobox.images.metadata import Metadata, apply_changes, parse_duration

pytestmark = pytest.mark.unit

BASE = {"Env": ["PATH=/usr/bin:/bin", "HOME=/root"], "Cmd": ["sh"], "WorkingDir": "/srv"}


def run(text: str, config: dict = BASE, args: dict = None) -> Metadata:
    meta = Metadata(config, args)
    for i in parse(text).instructions:
        meta.apply(i)
    return meta


def test_cmd_and_entrypoint_forms_and_the_inherited_cmd_rule() -> None:
    c = run('ENTRYPOINT ["/bin/app"]\n').config
    assert c["Entrypoint"] == ["/bin/app"] and c["Cmd"] is None  # the base's CMD is dropped
    c = run('CMD ["x"]\nENTRYPOINT app --flag\n').config
    assert c["Entrypoint"] == ["/bin/sh", "-c", "app --flag"] and c["Cmd"] == ["x"]
    c = run('SHELL ["/bin/bash", "-o", "pipefail", "-c"]\nCMD echo $HOME\n').config
    assert c["Cmd"] == ["/bin/bash", "-o", "pipefail", "-c", "echo $HOME"]
    assert BASE["Cmd"] == ["sh"]  # the input is not changed


def test_env_expands_against_the_environment_before_the_instruction() -> None:
    c = run("ENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\nENV MY_NAME John Doe\n").config
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["def"] == "hello" and env["ghi"] == "bye" and env["MY_NAME"] == "John Doe"
    assert c["Env"][:2] == ["PATH=/usr/bin:/bin", "HOME=/root"]  # replaced in place, order kept
    assert run("ENV PATH=/x:$PATH\n").config["Env"][0] == "PATH=/x:/usr/bin:/bin"


def test_build_args_are_seen_and_env_wins_over_them() -> None:
    c = run("ENV A=${V:-none} H=$HOME\nUSER $U\n", args={"V": "arg", "HOME": "/arg", "U": "app"}).config
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["A"] == "arg" and env["H"] == "/root" and c["User"] == "app"


def test_labels_expose_volume_workdir_stopsignal() -> None:
    c = run('LABEL a=1 "b c"="d e"\nEXPOSE 80 53/udp 8000-8002\nVOLUME ["/data"]\nVOLUME /a /b\n'
            "WORKDIR app\nWORKDIR ../x\nSTOPSIGNAL SIGQUIT\n").config
    assert c["Labels"] == {"a": "1", "b c": "d e"}
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"}
    assert set(c["Volumes"]) == {"/data", "/a", "/b"}
    assert c["WorkingDir"] == "/srv/x" and c["StopSignal"] == "SIGQUIT"


@pytest.mark.parametrize("text,match", [
    ("EXPOSE 70000\n", "invalid port"), ("EXPOSE 80/icmp\n", "invalid port"),
    ("STOPSIGNAL SIGNOPE\n", "not a signal"), ("SHELL /bin/bash\n", "JSON form"),
    ("ONBUILD FROM x\n", "isn't allowed"), ("HEALTHCHECK --interval=5x CMD true\n", "not a duration"),
    ("HEALTHCHECK --retries=0 CMD true\n", "positive"), ("CMD --x=1 a\n", "unknown flag"),
    ("RUN true\n", "only the configuration"),
])
def test_bad_instructions_are_named(text: str, match: str) -> None:
    with pytest.raises(DockerfileError, match=match):
        run(text)


def test_healthcheck_and_onbuild() -> None:
    c = run('HEALTHCHECK --interval=1m30s --timeout=5s --retries=3 CMD curl -f http://x/ || exit 1\n'
            'ONBUILD RUN make\n').config
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/ || exit 1"],
                                "Interval": 90 * 10**9, "Timeout": 5 * 10**9, "Retries": 3}
    assert c["OnBuild"] == ["RUN make"]
    assert run('HEALTHCHECK CMD ["a", "b"]\n').config["Healthcheck"]["Test"] == ["CMD", "a", "b"]
    assert run("HEALTHCHECK NONE\n").config["Healthcheck"] == {"Test": ["NONE"]}
    assert parse_duration("1h2m3.5s", "x") == (3600 + 120 + 3.5) * 10**9


def test_commit_changes_accept_dockers_list_only() -> None:
    c = apply_changes(BASE, ['CMD ["run"]', "ENV A=1", "EXPOSE 80", "WORKDIR /w", "USER 1000"])
    assert c["Cmd"] == ["run"] and "A=1" in c["Env"] and c["WorkingDir"] == "/w" and c["User"] == "1000"
    with pytest.raises(DockerfileError, match="change 1: RUN cannot be changed by commit"):
        apply_changes(BASE, ["RUN true"])
    with pytest.raises(DockerfileError, match="change 1:1: unknown instruction: NOPE"):
        apply_changes(BASE, ["NOPE x"])
