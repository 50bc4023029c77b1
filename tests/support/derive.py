"""Images the examples and the podman comparison need, derived with umoci from the test
images' busybox (support/images.py, so they share its layer) and pushed to the same
registry.

- `push_runtime_images`: ``library/runtime:1`` and ``library/runtime:2`` — Hub-style names,
  so with ``ISOBOX_REGISTRY_MIRROR`` pointing at the registry ``Image.pull("runtime:1")``
  finds them (examples/two_versions.py). Each is busybox plus a stand-in language runtime
  in /opt/runtime: its VERSION, a ``runtime`` shell script that prints it, and a lib/
  whose files differ between the versions. Env: PATH with /opt/runtime/bin,
  RUNTIME_VERSION. Cmd: ``runtime``.

`Deriver` is the helper: it works on its own copy of the images' layout (the one the
images were built in is never modified), adds a layer of files and/or changes the
config, and pushes. The suite's fixtures (``deriver``, ``runtime_images``) are in
fixtures/examples.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

import attrs

from .images import PATH_ENV, TestImages, Tools, write_file

RUNTIME_VERSIONS = {"1": "1.8.4", "2": "2.1.0"}
RUNTIME_LIBS = {"1": ("core.sh", "legacy-io.sh"), "2": ("core.sh", "async.sh", "fetch.sh")}
RUNTIME_SCRIPT = b"""\
#!/bin/sh
# A stand-in for a language runtime (node, python, ...): it knows its version and the
# modules it ships, and finds them only in its own image.
version=$(cat /opt/runtime/VERSION)
case "$1" in
  --version) echo "v$version" ;;
  *) echo "runtime v$version with modules: $(cd /opt/runtime/lib && echo *)" ;;
esac
"""

Files = Mapping[str, Tuple[bytes, int]]  # path in the image -> (content, mode)


class Deriver:
    """New images on top of the test images' busybox, built by umoci (not isobox)."""

    def __init__(self, images: TestImages, work: Path) -> None:
        self.images = images
        self.work = work
        self.tools = Tools(work)
        self.layout = work / "oci"
        shutil.copytree(images.layout.path, self.layout, symlinks=True)

    def derive(self, tag: str, *, files: Files = {}, config: Sequence[str] = (),
               base: str = "busybox") -> str:
        """Tag ``tag``: ``base`` plus one layer with ``files`` (if any), then ``umoci
        config`` with ``config`` (its flags, e.g. ``--config.user=app``). Returns ``tag``."""
        oci = str(self.layout)
        source = base
        if files:
            self.tools.umoci_cmd("tag", "--image", f"{oci}:{base}", tag)
            bundle = self.work / f"bundle-{tag}"
            self.tools.umoci_cmd("unpack", "--rootless", "--image", f"{oci}:{tag}", str(bundle))
            for path, (data, mode) in files.items():
                write_file(bundle / "rootfs" / path.lstrip("/"), data, mode)
            self.tools.umoci_cmd("repack", "--image", f"{oci}:{tag}", str(bundle))
            source = tag
        if config:
            where = [] if source == tag else ["--tag", tag]
            self.tools.umoci_cmd("config", "--image", f"{oci}:{source}", *where, *config)
        elif source != tag:
            self.tools.umoci_cmd("tag", "--image", f"{oci}:{source}", tag)
        return tag

    def push(self, tag: str, repository: str, dest_tag: str) -> str:
        """Push to ``repository`` (a path on the images' registry); the full reference."""
        reference = f"{self.images.registry.host}/{repository}:{dest_tag}"
        self.tools.push(self.layout, tag, reference)
        return reference


@attrs.frozen
class RuntimeImages:
    registry_url: str  # for ISOBOX_REGISTRY_MIRROR
    names: Tuple[str, ...]  # the Hub-style names examples pull ("runtime:1", "runtime:2")
    versions: Mapping[str, str] = attrs.field(hash=False)  # tag -> version
    libs: Mapping[str, Tuple[str, ...]] = attrs.field(hash=False)  # tag -> lib files


def runtime_files(tag: str) -> Dict[str, Tuple[bytes, int]]:
    files: Dict[str, Tuple[bytes, int]] = {
        "opt/runtime/VERSION": (RUNTIME_VERSIONS[tag].encode() + b"\n", 0o644),
        "opt/runtime/bin/runtime": (RUNTIME_SCRIPT, 0o755),
    }
    for lib in RUNTIME_LIBS[tag]:
        files[f"opt/runtime/lib/{lib}"] = (f"# module {lib} of runtime {tag}\n".encode(), 0o644)
    return files


def push_runtime_images(deriver: Deriver) -> RuntimeImages:
    """``library/runtime:1`` and ``:2`` on the images' registry (see the module docstring)."""
    for tag, version in RUNTIME_VERSIONS.items():
        deriver.derive(f"runtime-{tag}", files=runtime_files(tag), config=[
            "--config.env", PATH_ENV.replace("PATH=", "PATH=/opt/runtime/bin:"),
            "--config.env", f"RUNTIME_VERSION={version}",
            "--config.cmd", "runtime",
            "--config.label", f"org.isobox.example.runtime={version}",
        ])
        deriver.push(f"runtime-{tag}", "library/runtime", tag)
    return RuntimeImages(
        registry_url=deriver.images.registry.url,
        names=tuple(f"runtime:{tag}" for tag in RUNTIME_VERSIONS),
        versions=dict(RUNTIME_VERSIONS),
        libs=dict(RUNTIME_LIBS),
    )


__all__ = ["Deriver", "RuntimeImages", "push_runtime_images", "runtime_files"]
