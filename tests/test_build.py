"""Image.build (docker build): a Dockerfile's steps run for real (RUN in containers, COPY
from the context and other stages, configuration-only instructions), the cache that makes
an unchanged build run nothing, and the errors that name the line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import isobox
from isobox.images.image import Image


def write(ctx: Path, files: dict) -> Path:
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def build(ctx: Path, lines: List[str], **kw) -> Image:
    return Image.build(ctx, progress=lines.append, **kw)


DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS base
ARG GREETING=hello
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY app/ ./
COPY --chmod=0755 run.sh /usr/local/bin/run
RUN echo "$GREETING from RUN" > greeting && rm /bin/ls && mkdir -p data && \\
    echo built > data/flag
RUN <<EOF
echo heredoc > /srv/app/heredoc
EOF
USER app
EXPOSE 8080
LABEL org.example.name="the app"
CMD ["run"]

FROM scratch AS out
COPY --from=base /srv/app/greeting /greeting
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE,
        "app/main.txt": "main\n",
        "app/secret.key": "nope\n",
        "app/sub/deep.txt": "deep\n",
        "run.sh": "#!/bin/sh\ncat /srv/app/greeting\n",
        ".dockerignore": "**/*.key\n",
    })


def test_a_multi_stage_build_runs_for_real(ctx, images, store_root):
    lines: List[str] = []
    args = {"BASE": images.busybox.reference, "GREETING": "hi"}
    img = build(ctx, lines, tag="localhost/built:1", target="base", build_args=args)
    assert img.reference == "localhost/built:1"
    assert isobox.run(img, timeout=30).stdout == b"hi from RUN\n"  # CMD, USER app, WORKDIR, chmod
    out = isobox.run(img, ["sh", "-c", "ls; cat main.txt sub/deep.txt data/flag heredoc; "
                           "test -e /bin/ls || echo no-ls; id -u; echo $APP_HOME"], timeout=30).stdout.decode()
    words = out.split()
    assert "secret.key" not in words  # .dockerignore
    for word in ("main.txt", "sub", "main", "deep", "built", "heredoc", "no-ls", "1000", "/srv/app"):
        assert word in words, (word, out)
    record = isobox.Store.open().read_image(img.digest)
    assert record is not None
    cfg = record.config["config"]
    assert cfg["User"] == "app" and cfg["WorkingDir"] == "/srv/app" and "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["Labels"]["org.example.name"] == "the app" and cfg["Cmd"] == ["run"]
    assert not any(e.startswith("GREETING=") for e in cfg["Env"])  # an ARG does not persist
    assert any(h.get("empty_layer") for h in record.config["history"])
    # the last stage: only the file copied from the first, on nothing
    out_img = build(ctx, lines, build_args=args)
    rec = isobox.Store.open().read_image(out_img.digest)
    assert rec is not None and len(rec.layers) == 1


def test_an_unchanged_build_runs_nothing_and_a_changed_file_rebuilds_from_its_step(ctx, images, store_root):
    args = {"BASE": images.busybox.reference}
    a = build(ctx, [], target="base", build_args=args)
    again: List[str] = []
    b = build(ctx, again, target="base", build_args=args)
    assert a.id == b.id, "\n".join(again)
    steps = [l for l in again if " RUN " in l or " COPY " in l or l.startswith("CACHED")]
    assert steps and all(l.startswith("CACHED") for l in steps), again
    (ctx / "app" / "main.txt").write_text("changed\n")
    third: List[str] = []
    c = build(ctx, third, target="base", build_args=args)
    assert c.id != a.id
    assert not any(l.startswith("CACHED") and "RUN" in l for l in third), third  # after the change
    assert isobox.run(c, ["cat", "main.txt"], timeout=30).stdout == b"changed\n"


def test_a_failing_run_fails_the_build_with_its_output(tmp_path, images, store_root):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {images.busybox.reference}\n"
                                                 "RUN echo about to fail && exit 3\n"})
    with pytest.raises(isobox.BuildError, match=r"(?s)Dockerfile:2: RUN .* exited with 3:.*about to fail"):
        Image.build(ctx)
    leftovers = [p for p in (store_root / "containers").iterdir() if not p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("text,match", [
    ("FROM {base}\nCOPY missing.txt /x\n", r"Dockerfile:2: COPY failed: missing.txt: not found"),
    ("FROM {base}\nCOPY a b /x\n", "must be a directory and end with a /"),
    ("FROM {base}\nBOGUS x\n", r"Dockerfile:2: unknown instruction: BOGUS"),
    ("FROM {base}\nADD https://example.com/x /x\n", "URLs and git are not supported"),
    ("FROM {base}\nRUN --mount=type=cache,target=/c true\n", "--mount is not supported"),
    ("FROM scratch\nRUN true\n", "nothing to run"),
])
def test_errors_name_the_line(tmp_path, images, store_root, text, match):
    ctx = write(tmp_path / "ctx", {"Dockerfile": text.format(base=images.busybox.reference), "a": "", "b": ""})
    with pytest.raises((isobox.BuildError, isobox.DockerfileError), match=match):
        Image.build(ctx)


def test_isobox_build_and_commit_commands(tmp_path, images, store_root):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "isobox", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "ISOBOX_ROOT": str(store_root)})

    ctx = write(tmp_path / "ctx", {"Containerfile": "ARG BASE\nFROM $BASE\nARG WHO\nRUN echo $WHO > /who\n"})
    done = cli("build", "-q", "-f", "Containerfile", "-t", "localhost/cli:1", "-t", "localhost/cli:2",
               "--build-arg", f"BASE={images.busybox.reference}", "--build-arg", "WHO=cli",
               "--label", "a=b", str(ctx))
    assert done.returncode == 0, done.stderr
    image_id = done.stdout.strip()
    assert Image.get("localhost/cli:2").id == image_id
    assert isobox.run(Image.get("localhost/cli:1"), ["cat", "/who"], timeout=30).stdout == b"cli\n"
    done = cli("run", "-d", "--name", "to-commit", "localhost/cli:1", "sh", "-c", "echo more > /more; sleep 60")
    assert done.returncode == 0, done.stderr
    try:
        deadline = time.monotonic() + 10
        while cli("exec", "to-commit", "cat", "/more").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # until its first write is there
        done = cli("commit", "-c", "CMD cat /more /who", "-m", "from the CLI", "to-commit", "localhost/cli:3")
        assert done.returncode == 0, done.stderr
    finally:
        cli("rm", "-f", "to-commit")
    assert isobox.run(Image.get("localhost/cli:3"), timeout=30).stdout == b"more\ncli\n"


def test_onbuild_chown_add_of_a_tar_and_copy_of_a_heredoc(tmp_path, images, store_root):
    import tarfile

    base_ctx = write(tmp_path / "base", {"Dockerfile": f"FROM {images.busybox.reference}\n"
                                                       "ONBUILD RUN echo triggered > /onbuild\n"})
    Image.build(base_ctx, tag="localhost/onbuild-base:1")
    ctx = write(tmp_path / "ctx", {"owned.txt": "mine\n"})
    with tarfile.open(ctx / "files.tar.gz", "w:gz") as t:
        t.add(ctx / "owned.txt", arcname="inside/owned.txt")
    write(ctx, {"Dockerfile": "FROM localhost/onbuild-base:1\n"
                              "COPY --chown=app owned.txt /home/app/\n"
                              "ADD files.tar.gz /unpacked/\n"
                              "COPY <<EOF /etc/motd\nhello $HOSTNAME\nEOF\n"})
    img = Image.build(ctx)
    out = isobox.run(img, ["sh", "-c", "cat /onbuild; stat -c '%u:%g' /home/app/owned.txt; "
                           "cat /unpacked/inside/owned.txt; cat /etc/motd"], timeout=30).stdout.decode()
    assert out.split("\n") == ["triggered", "1000:1000", "mine", "hello ", ""], out
    record = isobox.Store.open().read_image(img.digest)
    assert record is not None and not record.config["config"].get("OnBuild")  # not inherited


def test_concurrent_builds_of_one_context(tmp_path, images, store_root):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {images.busybox.reference}\nCOPY a /a\n"
                                                 "RUN cat /a > /b\n", "a": "same\n"})
    env = {**os.environ, "ISOBOX_ROOT": str(store_root)}
    procs = [subprocess.Popen([sys.executable, "-m", "isobox", "build", "-q", "-t", f"localhost/par:{n}",
                               str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for n in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for n in range(3):
        assert isobox.run(Image.get(f"localhost/par:{n}"), ["cat", "/b"], timeout=30).stdout == b"same\n"


def test_the_same_copy_makes_the_same_layer(tmp_path, store_root):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY d /deep/in/here/\nWORKDIR /w/x\n",
                                   "d/f": "x\n", "d/e/g": "y\n"})
    digests = []
    for _ in range(2):
        img = Image.build(ctx, no_cache=True)
        record = isobox.Store.open().read_image(img.digest)
        assert record is not None
        digests.append([layer.digest for layer in record.layers])
        time.sleep(1.1)  # a second later: a time taken from the clock would show
    assert digests[0] == digests[1] and len(digests[0]) == 2


PODMAN_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG V=1.0
ENV A=1 B="two words" PATH=/opt/bin:$PATH
ENV C=${A}-${V:-x}-${UNSET:-dflt}
WORKDIR /srv
WORKDIR app
USER app:app
EXPOSE 80 53/udp
LABEL version=$V "quoted key"=value
VOLUME ["/data"]
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --retries=2 CMD ["true"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""


def test_the_configuration_is_what_podman_build_makes(tmp_path, images, store_root):
    from support.podman import Podman

    ctx = write(tmp_path / "ctx", {"Dockerfile": PODMAN_DOCKERFILE})
    args = {"BASE": images.busybox.reference, "V": "2.5"}
    ours = isobox.Store.open().read_image(Image.build(ctx, build_args=args).digest)
    assert ours is not None
    (tmp_path / "podman").mkdir()
    podman = Podman(tmp_path / "podman", images.registry.host)
    try:
        podman("build", "-q", "--format", "docker", "-t", "localhost/theirs:1", "--build-arg",
               f"BASE={images.busybox.reference}", "--build-arg", "V=2.5", str(ctx))
        inspected = json.loads(podman("image", "inspect", "localhost/theirs:1").stdout)[0]
        theirs = inspected["Config"]
    finally:
        podman.close()
    mine = ours.config["config"]
    # Env as a mapping: Buildah moves a replaced variable to the end, BuildKit (and isobox)
    # replaces it in place
    assert dict(e.split("=", 1) for e in mine["Env"]) == dict(e.split("=", 1) for e in theirs["Env"])
    for key in ("WorkingDir", "User", "ExposedPorts", "Labels", "Volumes", "StopSignal",
                "Entrypoint", "Cmd"):
        want = theirs.get(key)
        if key == "Labels":  # podman adds its own
            want = {k: v for k, v in (want or {}).items() if not k.startswith("io.buildah")}
        assert mine.get(key) == want, (key, mine.get(key), want)
    check = inspected["Healthcheck"]  # podman shows it beside the Config
    assert mine["Healthcheck"] == {k: v for k, v in check.items() if v}, check
