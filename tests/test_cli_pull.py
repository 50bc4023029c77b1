"""The ``isobox`` command's pull, images, rmi and prune, run as a user would (subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from isobox.cli.format import human_duration, human_size


def isobox(*args: str, root: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isobox", "--root", str(root), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_pull_prints_digest_status_and_name(images, tmp_path):
    proc = isobox("pull", images.busybox.reference, root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert out == [f"Digest: {images.busybox.digest}",
                   f"Status: Downloaded newer image for {images.busybox.reference}",
                   images.busybox.reference]
    assert "Pull complete" in proc.stderr  # a line per layer when stderr is not a terminal
    again = isobox("pull", images.busybox.reference, root=tmp_path)
    assert f"Status: Image is up to date for {images.busybox.reference}" in again.stdout


def test_pull_quiet_prints_only_the_name(images, tmp_path):
    proc = isobox("pull", "-q", images.layered.reference, root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == images.layered.reference + "\n" and proc.stderr == ""


def test_pull_of_an_index_reports_the_index_digest_and_platform(images, tmp_path):
    proc = isobox("pull", "--platform", "linux/arm64", images.multiarch.reference, root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Digest: {images.multiarch.digest}" in proc.stdout
    listing = isobox("images", root=tmp_path).stdout
    assert "linux/arm64" in listing
    assert images.multiarch.platforms["linux/arm64"].config_digest[7:19] in listing


def test_python_dash_m_and_the_console_script_agree(images, tmp_path):
    script = shutil.which("isobox", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the isobox console script is not installed next to this python")
    proc = subprocess.run([script, "--root", str(tmp_path), "pull", "-q", images.busybox.reference],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == images.busybox.reference


def test_hub_names_are_pulled_and_listed_as_docker_shows_them(hub_mirror, tmp_path):
    proc = isobox("pull", "busybox", root=tmp_path,
                  env={"ISOBOX_REGISTRY_MIRROR": hub_mirror.registry.url})
    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stdout)[-1] == "docker.io/library/busybox:latest"
    table = lines(isobox("images", root=tmp_path).stdout)
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "PLATFORM", "CREATED", "SIZE"]
    row = table[1].split()
    assert row[:4] == ["busybox", "latest", hub_mirror.hub_busybox.config_digest[7:19],
                       "linux/amd64"]
    assert row[-1].endswith("MB") and "ago" in table[1]


def test_images_quiet_and_digests(images, tmp_path):
    isobox("pull", "-q", images.busybox.reference, root=tmp_path)
    isobox("pull", "-q", images.layered.reference, root=tmp_path)
    quiet = lines(isobox("images", "-q", root=tmp_path).stdout)
    assert sorted(quiet) == sorted([images.busybox.config_digest[7:19],
                                    images.layered.config_digest[7:19]])
    with_digests = isobox("images", "--digests", root=tmp_path).stdout
    assert images.layered.digest in with_digests


def test_image_id_is_the_config_digest_as_docker_and_inspect_show_it(images, tmp_path):
    import json

    for image in (images.layered, images.layered_zstd):
        assert isobox("pull", "-q", image.reference, root=tmp_path).returncode == 0
    # The gzip and zstd variants: two manifests, one config, so one image ID.
    assert images.layered.config_digest == images.layered_zstd.config_digest
    assert images.layered.digest != images.layered_zstd.digest
    table = lines(isobox("images", "--digests", root=tmp_path).stdout)
    header = table[0].split()
    assert header[:4] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE"]
    rows = {row.split()[0]: row.split() for row in table[1:]}
    image_id = images.layered.config_digest[7:19]
    for image in (images.layered, images.layered_zstd):
        row = rows[image.repository]
        assert row[2] == image.digest and row[3] == image_id
    inspected = json.loads(isobox("inspect", images.layered.reference, root=tmp_path).stdout)
    assert inspected[0]["Id"] == images.layered.config_digest
    assert lines(isobox("images", "-q", root=tmp_path).stdout) == [image_id]
    removed = isobox("rmi", image_id, root=tmp_path)  # the ID shown is one rmi takes
    assert removed.returncode == 0, removed.stderr
    assert lines(isobox("images", "-q", root=tmp_path).stdout) == []


def test_rmi_untags_and_reports_missing_images(images, tmp_path):
    isobox("pull", "-q", images.busybox.reference, root=tmp_path)
    isobox("pull", "-q", images.layered.reference, root=tmp_path)
    proc = isobox("rmi", images.layered.reference, "nosuch/image:1", root=tmp_path)
    assert proc.returncode == 125
    assert lines(proc.stdout) == [f"Untagged: {images.layered.reference}"]
    assert "no such image" in proc.stderr
    listing = isobox("images", root=tmp_path).stdout
    assert "isobox-test/layered" not in listing and "isobox-test/busybox" in listing
    by_id = isobox("rmi", images.busybox.digest[7:19], root=tmp_path)
    assert by_id.returncode == 0, by_id.stderr
    assert f"Deleted: {images.busybox.digest}" in by_id.stdout
    assert len(lines(isobox("images", root=tmp_path).stdout)) == 1  # the header only
    assert not any((tmp_path / "layers" / "sha256").iterdir())


def test_prune_removes_crash_garbage(images, tmp_path):
    isobox("pull", "-q", images.busybox.reference, root=tmp_path)
    (tmp_path / "tmp" / "layer-1-dead").mkdir()
    (tmp_path / "tmp" / "layer-1-dead" / "half").write_bytes(b"x" * 5000)
    proc = isobox("prune", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Total reclaimed space:" in proc.stdout
    assert list((tmp_path / "tmp").iterdir()) == []
    assert "isobox-test/busybox" in isobox("images", root=tmp_path).stdout


@pytest.mark.parametrize("args, message", [
    (["pull", "Not A Reference"], "invalid reference"),
    (["pull", "127.0.0.1:1/nothing/here:latest"], "cannot reach"),
    (["pull", "--platform", "linux/amd64/v1/extra", "busybox"], "invalid platform"),
])
def test_isobox_errors_exit_125_with_a_message(tmp_path, args, message):
    proc = isobox(*args, root=tmp_path)
    assert proc.returncode == 125
    assert proc.stderr.startswith("isobox: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_image_on_the_registry_exits_125(images, tmp_path):
    proc = isobox("pull", f"{images.registry.host}/isobox-test/absent:latest", root=tmp_path)
    assert proc.returncode == 125 and "Traceback" not in proc.stderr


def test_usage_errors_exit_125_and_help_exits_0(tmp_path):
    assert isobox("pull", root=tmp_path).returncode == 125
    assert isobox("frobnicate", root=tmp_path).returncode == 125
    helped = isobox("--help", root=tmp_path)
    assert helped.returncode == 0 and "pull" in helped.stdout and "prune" in helped.stdout
    assert isobox(root=tmp_path).returncode == 0


def test_images_listing_does_not_import_requests(tmp_path):
    code = ("import sys; from isobox.cli import main; main(['--root', sys.argv[1], 'images']); "
            "assert 'requests' not in sys.modules, 'requests imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.unit
def test_human_units_match_dockers():
    assert human_size(0) == "0B"
    assert human_size(4_261_000) == "4.26MB"
    assert human_size(999) == "999B" and human_size(1000) == "1kB"
    assert human_duration(30) == "30 seconds"
    assert human_duration(3600) == "About an hour"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"
